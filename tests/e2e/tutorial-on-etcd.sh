#!/usr/bin/env bash
# The tutorial's end-to-end test with kvserver as a gateway over etcd: starts
# a single etcd member on free loopback ports, runs tests/e2e/tutorial.sh
# with --backend etcd, and checks that the value reached etcd itself.
#
# Needs what tutorial.sh needs, and Debian's etcd and etcdctl.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "e2e on etcd: FAIL: $*" >&2; exit 1; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

dir=$(mktemp -d)
client="http://127.0.0.1:$(free_port)"
peer="http://127.0.0.1:$(free_port)"
etcd --name e2e --data-dir "$dir/data" \
  --listen-client-urls "$client" --advertise-client-urls "$client" \
  --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
  --initial-cluster "e2e=$peer" 2>"$dir/etcd.log" &
etcd_pid=$!
cleanup() {
  kill -KILL "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Wait (up to 20 s) for etcd to serve.
for _ in $(seq 200); do
  grep -q "ready to serve client requests" "$dir/etcd.log" && break
  kill -0 "$etcd_pid" 2>/dev/null || fail "etcd exited: $(cat "$dir/etcd.log")"
  sleep 0.1
done
grep -q "ready to serve client requests" "$dir/etcd.log" || fail "etcd did not start"
echo "etcd on $client"

bash tests/e2e/tutorial.sh --backend etcd --etcd-endpoints "$client" --etcd-prefix tutorial/

stored=$(ETCDCTL_API=3 etcdctl --endpoints "$client" get tutorial/weather --print-value-only)
[ "$stored" = "sunny" ] || fail "etcd holds tutorial/weather=$stored"
echo "etcd:   tutorial/weather=$stored"
echo "e2e on etcd: PASS"
