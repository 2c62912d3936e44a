#!/usr/bin/env bash
# A/B of gateway flag sets (or builds) on the broadcast at 5,000 members,
# against the `ws` peer in the same run: the servers' CPU per delivery, the
# ratio to the peer, deliveries/s, delivery p99 and frames per socket write.
# Each round runs every side once, the order rotating; medians at the end.
#
#   loadtest/ab.sh "" "--write-delay 5ms" "--write-delay 20ms"
#   GATEWAY_BIN=/tmp/old-gateway ROUNDS=3 loadtest/ab.sh ""
#   loadtest/ab.sh "bin=/tmp/old-gateway" ""      # two builds in one run
#
# Each argument is one gateway side's extra flags ("" for the defaults),
# after an optional bin=<path> naming that side's gateway binary.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
MEMBERS=${MEMBERS:-5000}
OUT=target/ab
SECRET=bench-secret-of-at-least-32-bytes
LT=target/release/loadtest
mkdir -p "$OUT"
rm -f "$OUT"/*.row
[ $# -gt 0 ] || { echo "usage: loadtest/ab.sh \"<gateway flags>\"..." >&2; exit 2; }
[ -x "$LT" ] && [ -x "${GATEWAY_BIN:-target/release/gateway}" ] || cargo build --release --bins
[ -d loadtest/peers/ws-rooms/node_modules ] || (cd loadtest/peers/ws-rooms && npm ci --no-audit --no-fund --loglevel=error)
source loadtest/lib.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

sides=(peer "$@")
for round in $(seq "$ROUNDS"); do
  n=${#sides[@]}
  for i in $(seq 0 $((n - 1))); do
    side=$(( (i + round - 1) % n ))
    flags=${sides[$side]}
    if [ "$side" = 0 ]; then start_peer; url=$PEER; protocol=peer; pid=$PEER_PID
    else
      bin=${GATEWAY_BIN:-target/release/gateway}
      if [[ $flags == bin=* ]]; then
        bin=${flags%% *} && flags=${flags#"$bin"} && bin=${bin#bin=}
      fi
      # shellcheck disable=SC2086 # flags are words
      GATEWAY_BIN=$bin start_gateway $flags; url=$GATEWAY; protocol=switchboard; pid=$GATEWAY_PID
    fi
    "$LT" broadcast --members "$MEMBERS" --publishers 2 --rate 0 --window 64 --connect-rate 3000 \
      --server-pid "$pid" --url "$url" --protocol "$protocol" --secret "$SECRET" --duration "$DURATION" \
      --json "$OUT/run.json" >/dev/null 2>&1 || true
    per_write=-
    if [ "$side" != 0 ]; then
      per_write=$(curl -s "$GATEWAY_ADMIN" | awk '/^switchboard_gateway_frames_out_total /{f=$2} /^switchboard_gateway_writes_total /{w=$2} END {if (w > 0) printf "%.1f", f / w; else print "-"}')
    fi
    python3 - "$OUT/run.json" "$side" "$per_write" >>"$OUT/side$side.row" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = r["figures"]
print(json.dumps({"cpu": f["servers' CPU per delivery"]["value"], "rate": f["deliveries/s"]["value"],
                  "p99": r["histograms"]["latency"]["p99_us"] / 1000, "per_write": sys.argv[3]}))
PY
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done

python3 - "$OUT" "${sides[@]}" <<'PY'
import json, statistics, sys
out, sides = sys.argv[1], sys.argv[2:]
rows = {i: [json.loads(l) for l in open(f"{out}/side{i}.row")] for i in range(len(sides))}
med = lambda i, k: statistics.median(float(r[k]) for r in rows[i] if r[k] not in ("-", None))
peer = med(0, "cpu")
print("| side | CPU per delivery (µs) | peer / side | deliveries/s | delivery p99 (ms) | frames per write |")
print("|---|---|---|---|---|---|")
for i, s in enumerate(sides):
    name = "ws peer" if i == 0 else f"gateway {s or '(defaults)'}"
    cpu = med(i, "cpu")
    pw = "-" if i == 0 else f"{med(i, 'per_write'):.1f}"
    runs = ", ".join(f"{float(r['cpu']):.3f}" for r in rows[i])
    print(f"| {name} | {cpu:.3f} ({runs}) | {peer / cpu:.2f}x | {med(i, 'rate'):,.0f} | {med(i, 'p99'):,.0f} | {pw} |")
PY
