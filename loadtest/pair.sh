#!/usr/bin/env bash
# Two ways of serving one load, in one run: handshakes per second and per
# CPU second, memory per idle connection, and broadcast fanout, each side
# on a fresh standalone gateway, the side that goes first alternating.
# Writes its section of docs/benchmarks.md (bench.sh keeps it).
#
#   loadtest/pair.sh tls    # wss:// beside ws:// (section "tls"), ~4 min after the build
#   loadtest/pair.sh sse    # SSE beside WebSocket (section "sse")
#   loadtest/pair.sh deflate  # permessage-deflate beside plain (section "deflate")
#   CONNECTIONS=2000 ROUNDS=1 WRITE=0 loadtest/pair.sh sse
#
# tls: the certificate is an EC P-256 one from a CA made here with openssl,
# as a production gateway would most likely hold. sse: the same gateway
# flags; the members read `GET /sse` and POST their ops (loadtest
# --protocol switchboard-sse), the publishers too. deflate: --compression
# and clients that offer it, messages of 1 KiB (SIZE) of words.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${1:?usage: loadtest/pair.sh tls|sse|deflate}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-5000}
DURATION=${DURATION:-10s}
WRITE=${WRITE:-1}
OUT=target/bench-$KIND
mkdir -p "$OUT"
rm -f "$OUT"/*.json

cargo build --release --bins
LT=target/release/loadtest
SECRET=bench-secret-of-at-least-32-bytes
source loadtest/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case $KIND in
  tls)
    SIDES=(plain tls)
    command -v openssl >/dev/null || { echo "pair.sh: openssl is required (apt install openssl)" >&2; exit 1; }
    # A CA and a certificate for 127.0.0.1, both P-256.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=switchboard bench CA" \
      -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$OUT/san.ext"
    openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 2 \
      -extfile "$OUT/san.ext" -out "$OUT/server.pem" 2>/dev/null
    ;;
  sse) SIDES=(ws sse) ;;
  deflate) SIDES=(plain deflate) ;;
  *) echo "pair.sh: tls, sse or deflate, not $KIND" >&2; exit 2 ;;
esac

# The gateway flags and the loadtest flags of one side.
gateway_flags() {
  case $1 in
    tls) echo --tls-cert "$OUT/server.pem" --tls-key "$OUT/server.key" ;;
    deflate) echo --compression ;;
  esac
}
loadtest_flags() {
  case $1 in
    tls) echo --ca "$OUT/ca.pem" ;;
    sse) echo --protocol switchboard-sse ;;
    deflate) echo --protocol switchboard-deflate ;;
  esac
}
# Broadcast payload bytes: compression is about the payload.
SIZE=${SIZE:-$([ "$KIND" = deflate ] && echo 1024 || echo 100)}

run() { # name, side, scenario args...
  local name=$1 side=$2; shift 2
  echo "== $name: loadtest $* --url $GATEWAY" >&2
  # shellcheck disable=SC2046
  "$LT" $(loadtest_flags "$side") "$@" --url "$GATEWAY" --secret "$SECRET" --duration "$DURATION" \
    --json "$OUT/$name.json" >"$OUT/$name.txt" 2>"$OUT/$name.err" || { echo "$name failed:"; tail -5 "$OUT/$name.err"; } >&2
  cat "$OUT/$name.txt" >&2
}

for round in $(seq "$ROUNDS"); do
  sides=("${SIDES[@]}"); [ $((round % 2)) = 0 ] && sides=("${SIDES[1]}" "${SIDES[0]}")
  for scenario in connect broadcast; do
    for side in "${sides[@]}"; do
      # shellcheck disable=SC2046
      start_gateway $(gateway_flags "$side")
      case $scenario in
        connect) run "$side-connect-r$round" "$side" connect --connections "$CONNECTIONS" --connect-rate 4000 \
          --hold 3s --gateway-pid "$GATEWAY_PID" --server-pid "$GATEWAY_PID" ;;
        broadcast) run "$side-broadcast-r$round" "$side" broadcast --members 1000 --publishers 2 --rate 0 \
          --window 64 --size "$SIZE" --server-pid "$GATEWAY_PID" ;;
      esac
      kill -TERM "$GATEWAY_PID" 2>/dev/null || true
      wait "$GATEWAY_PID" 2>/dev/null || true
    done
  done
done

python3 loadtest/pair_report.py "$KIND" "$OUT" "$CONNECTIONS" >"$OUT/$KIND.md"
cat "$OUT/$KIND.md"
if [ "$WRITE" = 1 ]; then
  python3 -c 'import sys; sys.path.insert(0, "loadtest"); from sections import into; into("docs/benchmarks.md", sys.argv[1], sys.argv[2])' "$KIND" "$OUT/$KIND.md"
  echo "wrote the $KIND section of docs/benchmarks.md" >&2
fi
