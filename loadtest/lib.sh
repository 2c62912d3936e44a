# Helpers shared by bench.sh, scale.sh and ab.sh (sourced, not run).
#
# Every process a script starts goes into `pids` and is stopped on exit.
# start_gateway and start_peer need OUT and SECRET; GATEWAY_BIN picks
# another gateway build (target/release/gateway by default).

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# The second word of the first line of `file` that starts with `prefix`
# (the address a server prints), waiting up to 20 s for it.
wait_line() { # file, prefix
  for _ in $(seq 400); do
    line=$(grep -m1 "^ *$2" "$1" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line" | awk '{print $2}'; return; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1" >&2
  exit 2
}

# A standalone gateway with the load generator's limits lifted; sets
# GATEWAY (its WebSocket URL), GATEWAY_ADMIN (its metrics URL), GATEWAY_PID.
start_gateway() { # extra gateway flags...
  "${GATEWAY_BIN:-target/release/gateway}" --standalone "$@" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 \
    --jwt-secret "$SECRET" --rate-per-sec 1000000 --rate-burst 1000000 \
    --max-connections-per-ip 1000000 --handshake-rate 1000000 --handshake-burst 1000000 \
    >"$OUT/gateway.out" 2>"$OUT/gateway.log" &
  GATEWAY_PID=$!
  pids+=("$GATEWAY_PID")
  GATEWAY=$(wait_line "$OUT/gateway.out" websocket)
  GATEWAY_ADMIN=$(wait_line "$OUT/gateway.out" admin)
}

start_peer() { # extra peer flags...
  node loadtest/peers/ws-rooms/server.js --listen 127.0.0.1:0 "$@" >"$OUT/peer.out" 2>"$OUT/peer.log" &
  PEER_PID=$!
  pids+=("$PEER_PID")
  PEER=$(wait_line "$OUT/peer.out" websocket)
}
