#!/usr/bin/env bash
# Builds the pinned Traefik (this module's go.mod) once into a cache keyed by
# its version, outside the repository, and prints the binary's path. A cold
# build takes about 7 minutes and 3 GB; later calls reuse the binary.
set -euo pipefail
cd "$(dirname "$0")"
version=$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/traefik/$version"
bin="$dir/traefik"
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "traefik: building $version into $dir (cold: about 7 minutes)" >&2
  go build -trimpath -o "$bin.tmp" github.com/traefik/traefik/v3/cmd/traefik
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
