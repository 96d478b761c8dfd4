#!/bin/sh
# The tutorial flow against a running Tollgate gateway, with curl only:
# register, log in, create, list, delete, and the checks that matter
# (no token is 401, a forged identity header is ignored, unknown paths 404).
# Used by `helm test` and by k8s/kind.sh. Usage: BASE_URL=http://host:port tutorial.sh
set -eu
base="${BASE_URL:?set BASE_URL to the gateway, e.g. http://localhost:8080}"
tmp="${TMPDIR:-/tmp}/tollgate-tutorial.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
user="tutorial$(date +%s)$$"
pass="correct-horse-$(date +%s)"

# request NAME WANT_STATUS curl-args...: runs curl, keeps the body in $tmp/body.
request() {
  name=$1 want=$2
  shift 2
  got=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 10 "$@") || got="curl failed"
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: status $got, want $want; body: $(cat "$tmp/body" 2>/dev/null)"
    exit 1
  fi
  echo "ok   $name ($got)"
}

request "register $user" 201 -H 'Content-Type: application/json' \
  -d "{\"name\": \"$user\", \"password\": \"$pass\"}" "$base/register"
request "login" 200 -X POST -u "$user:$pass" "$base/login"
token=$(sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p' "$tmp/body")
[ -n "$token" ] || { echo "FAIL login: no token in $(cat "$tmp/body")"; exit 1; }

request "GET /books without a token" 401 "$base/books"
request "GET /users as a plain user" 403 -H "x-access-tokens: $token" "$base/users"
request "POST /book" 201 -H "x-access-tokens: $token" -H 'Content-Type: application/json' \
  -d '{"name": "The Hobbit", "Author": "J. R. R. Tolkien", "Publisher": "George Allen & Unwin", "book_prize": 12}' \
  "$base/book"
id=$(sed -n 's/.*"id" *: *\([0-9][0-9]*\).*/\1/p' "$tmp/body")
[ -n "$id" ] || { echo "FAIL POST /book: no id in $(cat "$tmp/body")"; exit 1; }
request "GET /books" 200 -H "x-access-tokens: $token" "$base/books"
grep -q '"The Hobbit"' "$tmp/body" || { echo "FAIL GET /books: book $id not listed: $(cat "$tmp/body")"; exit 1; }
# A client-supplied identity must never reach books: with a forged
# x-user-id and no token the request is refused, and with a token the
# forged value is overwritten (the list still shows only the caller's books).
request "GET /books with a forged x-user-id and no token" 401 -H "x-user-id: $user-forged" "$base/books"
request "GET /books with a forged x-user-id" 200 -H "x-access-tokens: $token" \
  -H 'x-user-id: 00000000-0000-0000-0000-000000000000' -H 'x-user-roles: admin' "$base/books"
grep -q '"The Hobbit"' "$tmp/body" || { echo "FAIL forged x-user-id reached books: $(cat "$tmp/body")"; exit 1; }
request "GET /books?all=true with a forged admin role" 403 -H "x-access-tokens: $token" \
  -H 'x-user-roles: admin' "$base/books?all=true"
request "DELETE /books/$id" 204 -X DELETE -H "x-access-tokens: $token" "$base/books/$id"
request "DELETE /books/$id again" 404 -X DELETE -H "x-access-tokens: $token" "$base/books/$id"
request "a tampered token" 401 -H "x-access-tokens: ${token}x" "$base/books"
request "an unknown path" 404 "$base/admin"
echo "tutorial flow passed against $base"
