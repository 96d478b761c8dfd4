#!/usr/bin/env bash
# The authz load benchmark (make bench-authz): builds tollgate, the
# benchmark driver and the pinned ghz, then runs the driver. Arguments go
# to the driver, e.g. -runs 5 -duration 20s -c 50.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -o "$out/tollgate" ./cmd/tollgate
go build -o "$out/bench" ./e2e/authzbench
(cd tools/ghz && go build -o "$out/ghz" github.com/bojand/ghz/cmd/ghz)
"$out/bench" -tollgate "$out/tollgate" -ghz "$out/ghz" "$@"
