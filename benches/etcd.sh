# shellcheck shell=bash
# Sourced by the benchmark scripts that run against etcd (failover.sh,
# switchover.sh): free loopback ports, a millisecond clock, and one etcd
# member on loopback with short heartbeat and election timeouts. Expects
# ETCD (the etcd binary) and WORK (a scratch directory); start_etcd sets
# ENDPOINT and ETCD_PID.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now_ms() { date +%s%3N; }

start_etcd() {
  local client_port peer_port
  client_port=$(free_port)
  peer_port=$(free_port)
  ENDPOINT="http://127.0.0.1:$client_port"
  "$ETCD" --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls "$ENDPOINT" --advertise-client-urls "$ENDPOINT" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "bench=http://127.0.0.1:$peer_port" \
    --heartbeat-interval 100 --election-timeout 1000 >"$WORK/etcd.log" 2>&1 &
  # shellcheck disable=SC2034 # the sourcing script stops it
  ETCD_PID=$!
}
