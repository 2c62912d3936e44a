#!/usr/bin/env bash
# TLS against plain on one standalone gateway, in one run: handshakes per
# second and per CPU second, memory per connection, and broadcast fanout
# over wss:// beside ws://. Writes the "TLS" section of docs/benchmarks.md
# (bench.sh keeps it).
#
#   loadtest/tls.sh                 # about 4 minutes after the release build
#   CONNECTIONS=2000 ROUNDS=1 WRITE=0 loadtest/tls.sh
#
# The certificate is an EC P-256 one from a CA made here with openssl, as a
# production gateway would most likely hold.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-5000}
DURATION=${DURATION:-10s}
WRITE=${WRITE:-1}
OUT=target/bench-tls
mkdir -p "$OUT"
rm -f "$OUT"/*.json
command -v openssl >/dev/null || { echo "tls.sh: openssl is required (apt install openssl)" >&2; exit 1; }

cargo build --release --bins
LT=target/release/loadtest
SECRET=bench-secret-of-at-least-32-bytes
source loadtest/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A CA and a certificate for 127.0.0.1, both P-256.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=switchboard bench CA" \
  -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$OUT/san.ext"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 2 \
  -extfile "$OUT/san.ext" -out "$OUT/server.pem" 2>/dev/null

run() { # name, url, scenario args...
  local name=$1 url=$2; shift 2
  echo "== $name: loadtest $* --url $url" >&2
  "$LT" "$@" --url "$url" --ca "$OUT/ca.pem" --secret "$SECRET" --duration "$DURATION" \
    --json "$OUT/$name.json" >"$OUT/$name.txt" 2>"$OUT/$name.err" || { echo "$name failed:"; tail -5 "$OUT/$name.err"; } >&2
  cat "$OUT/$name.txt" >&2
}

# Fresh gateways per scenario; the side that goes first alternates.
for round in $(seq "$ROUNDS"); do
  sides="plain tls"; [ $((round % 2)) = 0 ] && sides="tls plain"
  for scenario in connect broadcast; do
    for side in $sides; do
      if [ "$side" = tls ]; then start_gateway --tls-cert "$OUT/server.pem" --tls-key "$OUT/server.key"
      else start_gateway; fi
      case $scenario in
        connect) run "$side-connect-r$round" "$GATEWAY" connect --connections "$CONNECTIONS" --connect-rate 4000 \
          --hold 3s --gateway-pid "$GATEWAY_PID" --server-pid "$GATEWAY_PID" ;;
        broadcast) run "$side-broadcast-r$round" "$GATEWAY" broadcast --members 1000 --publishers 2 --rate 0 \
          --window 64 --server-pid "$GATEWAY_PID" ;;
      esac
      kill -TERM "$GATEWAY_PID" 2>/dev/null || true
      wait "$GATEWAY_PID" 2>/dev/null || true
    done
  done
done

python3 loadtest/tls_report.py "$OUT" "$CONNECTIONS" >"$OUT/tls.md"
cat "$OUT/tls.md"
if [ "$WRITE" = 1 ]; then
  python3 -c 'import sys; sys.path.insert(0, "loadtest"); from sections import into; into("docs/benchmarks.md", "tls", sys.argv[1])' "$OUT/tls.md"
  echo "wrote the TLS section of docs/benchmarks.md" >&2
fi
