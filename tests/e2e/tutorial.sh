#!/usr/bin/env bash
# The tutorial's end-to-end test, across three languages: start kvserver, the
# Python client sets weather=sunny, then the Ruby client and `kv` both read
# `weather` back and print `sunny`.
#
# Arguments, if any, are kvserver's (default: --backend memory), so the same
# test runs over every backend (tests/e2e/tutorial-on-etcd.sh passes etcd's).
#
# Needs KVSERVER_BIN and KV_BIN (built binaries) and PYTHON (a Python with the
# keyvalue package installed); scripts/test sets all three.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KVSERVER_BIN:?path of the kvserver binary}" "${KV_BIN:?path of the kv binary}"
: "${PYTHON:?a python with the keyvalue package}"

fail() { echo "e2e: FAIL: $*" >&2; exit 1; }

backend=("$@")
[ ${#backend[@]} -gt 0 ] || backend=(--backend memory)

log=$(mktemp)
"$KVSERVER_BIN" --listen 127.0.0.1:0 "${backend[@]}" 2>"$log" &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

# Wait (up to 20 s) for the server to announce its address.
addr=""
for _ in $(seq 200); do
  addr=$(sed -n 's/^listening on //p' "$log")
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || fail "kvserver exited: $(cat "$log")"
  sleep 0.1
done
[ -n "$addr" ] || fail "kvserver did not announce its address"
echo "kvserver on $addr (${backend[*]})"

out=$("$PYTHON" -m keyvalue --addr "$addr" weather=sunny)
[ "$out" = 'sent "weather" to server' ] || fail "python set printed: $out"
echo "python: $out"

out=$(ruby -I clients/ruby/lib clients/ruby/exe/kv-rb --addr "$addr" weather)
[ "$out" = "sunny" ] || fail "ruby get printed: $out"
echo "ruby:   $out"

out=$("$KV_BIN" --addr "$addr" get weather)
[ "$out" = "sunny" ] || fail "kv get printed: $out"
echo "kv:     $out"

out=$("$PYTHON" -m keyvalue --addr "$addr" weather)
[ "$out" = 'server returned value "sunny" for key "weather"' ] || fail "python get printed: $out"
echo "python: $out"

kill -TERM "$server"
wait "$server" || fail "kvserver did not exit 0 on SIGTERM"
trap 'rm -f "$log"' EXIT
echo "e2e: PASS"
