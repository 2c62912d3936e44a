#!/usr/bin/env bash
# Benchmarks Switchboard against the `ws` peer and a local cluster in one run
# on this machine, and writes docs/benchmarks.md.
#
#   loadtest/bench.sh            # about 25 minutes after the release build
#   DURATION=20s loadtest/bench.sh
#
# Everything runs on loopback. Figures are compared as ratios against the peer
# measured in the same run: absolute numbers drift on shared machines.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
# Rounds of each side-by-side comparison (the report shows medians).
ROUNDS=${ROUNDS:-3}
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT"/*.json

cargo build --release --bins
(cd loadtest/peers/ws-rooms && npm ci --no-audit --no-fund --loglevel=error)
LT=target/release/loadtest
SECRET=bench-secret-of-at-least-32-bytes

source loadtest/lib.sh

# A connection cap of 20000 file descriptors per process is common on shared
# machines; use what this one allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CONNECTIONS=${CONNECTIONS:-$(( $(ulimit -n) - 2000 < 10000 ? $(ulimit -n) - 2000 : 10000 ))}

run() { # name, url, protocol, scenario args...
  local name=$1 url=$2 protocol=$3; shift 3
  echo "== $name: loadtest $* --url $url --protocol $protocol" >&2
  "$LT" "$@" --url "$url" --protocol "$protocol" --secret "$SECRET" --duration "$DURATION" \
    --json "$OUT/$name.json" --plot "$OUT/$name.svg" >"$OUT/$name.txt" 2>/dev/null || true
  cat "$OUT/$name.txt" >&2
  echo "$LT $* --url <$protocol> --protocol $protocol --duration $DURATION" >"$OUT/$name.cmd"
}

# Fresh servers for each scenario, so one run's leftovers cannot slow the
# next. Three rounds, each side's run right after the other's, the side that
# goes first alternating: the report shows every figure's median with the
# min–max beside it, so one noisy run cannot make a headline. The servers'
# own CPU (--server-pid) gives the cost per delivery and per handshake.
for round in $(seq "$ROUNDS"); do
  sides="gateway peer"; [ $((round % 2)) = 0 ] && sides="peer gateway"
  for scenario in broadcast broadcast5000 chat connect; do
    for side in $sides; do
      if [ "$side" = gateway ]; then start_gateway; url=$GATEWAY; protocol=switchboard; pid=$GATEWAY_PID
      else start_peer; url=$PEER; protocol=peer; pid=$PEER_PID; fi
      name="$side-$scenario-r$round"
      case $scenario in
        broadcast) run "$name" "$url" "$protocol" broadcast --members 1000 --publishers 2 --rate 0 --window 64 \
          --server-pid "$pid" ;;
        broadcast5000) DURATION=20s run "$name" "$url" "$protocol" broadcast --members 5000 --publishers 2 --rate 0 \
          --window 64 --connect-rate 3000 --server-pid "$pid" ;;
        chat) run "$name" "$url" "$protocol" chat --rooms 200 --members 5 --rate 4 --server-pid "$pid" ;;
        connect) run "$name" "$url" "$protocol" connect --connections "$CONNECTIONS" --connect-rate 2000 \
          --hold 3s --gateway-pid "$pid" --server-pid "$pid" ;;
      esac
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  done
done

# Publishing through a `publish` hook: the chat load at half the rate (below
# what two cores shared with a Node.js backend saturate at), its rooms in a
# namespace whose publishes the backend approves first (the cheapest backend:
# loadtest/peers/hook-backend answers {"ok":true}), beside the same load
# without the hook, measured now.
node loadtest/peers/hook-backend/server.js --listen 127.0.0.1:0 >"$OUT/hook.out" 2>"$OUT/hook.log" &
pids+=("$!")
HOOKS=$(wait_line "$OUT/hook.out" hooks)
printf '[[namespace]]\nprefix = "chat-"\nhooks = ["publish"]\n' >"$OUT/hooked.toml"
for round in $(seq "$ROUNDS"); do
  order="no yes"; [ $((round % 2)) = 0 ] && order="yes no"
  for hooked in $order; do
    if [ "$hooked" = yes ]; then start_gateway --config "$OUT/hooked.toml" --hook-url "$HOOKS"; name=gateway-chat-hooked
    else start_gateway; name=gateway-chat-unhooked; fi
    run "$name-r$round" "$GATEWAY" switchboard chat --rooms 200 --members 5 --rate 2
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  done
done

# The server API's publish: HTTP/JSON beside gRPC Rooms, the same calls on
# the same standalone gateway (32 callers, 4 rooms each), measured now.
start_gateway
API=$(wait_line "$OUT/gateway.out" api)
GRPC=$(wait_line "$OUT/gateway.out" grpc)
for round in $(seq "$ROUNDS"); do
  order="http grpc"; [ $((round % 2)) = 0 ] && order="grpc http"
  for transport in $order; do
    run "gateway-api-$transport-r$round" "$GATEWAY" switchboard api --api "$API" --grpc "$GRPC" \
      --transport "$transport" --concurrency 32 --rooms 4
  done
done
kill -TERM "$GATEWAY_PID" 2>/dev/null || true
wait "$GATEWAY_PID" 2>/dev/null || true

# Seating a room: N distinct users join one room at once, for each way a
# namespace announces joins. The peer announces every join (--announce, as
# the Socket.IO chat example does) or none.
cat >"$OUT/seat.toml" <<'EOF'
[[namespace]]
prefix = "batched:"
join_leave = "batched"
members = false

[[namespace]]
prefix = "off:"
join_leave = "off"
members = false

[[namespace]]
prefix = ""
EOF
seat() { # name, url, protocol, pid, members, mode, timeout
  run "$1" "$2" "$3" seat --members "$5" --room "$6:seat" --join-leave "$6" --timeout "$7" \
    --connect-rate 3000 --sources 4 --gateway-pid "$4"
}
for n in 1000 5000 10000; do
  for mode in batched off all; do
    start_gateway --config "$OUT/seat.toml"
    seat "gateway-seat-$mode-$n" "$GATEWAY" switchboard "$GATEWAY_PID" "$n" "$mode" 30s
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  done
  for mode in off all; do
    if [ "$mode" = all ]; then start_peer --announce; else start_peer; fi
    # Past 2,000 members the peer's announcements take minutes: give up sooner.
    timeout=30s; if [ "$mode" = all ] && [ "$n" -gt 2000 ]; then timeout=20s; fi
    seat "peer-seat-$mode-$n" "$PEER" peer "$PEER_PID" "$n" "$mode" "$timeout"
    kill -TERM "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
  done
done

# The local cluster (nats-server, presence, two routers, two gateways), with
# rooms in memory and then in JetStream (one server: R1), measured one after
# the other: the chat load at four rates, one room's publish ceiling, and a
# router killed (kill -9) 5 s into a 20 s chat load.
URLS=ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws
SECRET=local-cluster-secret-for-loopback-only
for store in memory jetstream; do
  rm -rf "$OUT/cluster-$store"
  # Without the per-connection rate limit, as for the standalone gateway.
  GATEWAY_ARGS="--rate-per-sec 1000000 --rate-burst 1000000" \
    PROFILE=release STORE=$store KEEP_UP=1 LOGS="$OUT/cluster-$store" deploy/local/cluster.sh >"$OUT/cluster-$store.out" 2>&1 &
  CLUSTER_PID=$!
  pids+=("$CLUSTER_PID")
  for _ in $(seq 600); do
    grep -q "Press Ctrl-C" "$OUT/cluster-$store.out" 2>/dev/null && break
    sleep 0.5
  done
  for rate in 1 5 10 20; do
    run "cluster-$store-chat-$((rate * 1000))" "$URLS" switchboard chat --rooms 200 --members 5 --rate "$rate"
  done
  run "cluster-$store-room" "$URLS" switchboard broadcast --members 10 --publishers 4 --rate 0 --window 64
  (sleep 5 && pkill -9 -f "id router-1 ") &
  DURATION=20s run "cluster-$store-kill" "$URLS" switchboard chat --rooms 200 --members 5 --rate 2
  kill -TERM "$CLUSTER_PID" 2>/dev/null || true
  wait "$CLUSTER_PID" 2>/dev/null || true
done

# Through a file: the report keeps the Scale section of the old one.
python3 loadtest/bench_report.py "$OUT" >"$OUT/benchmarks.md"
mv "$OUT/benchmarks.md" docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
