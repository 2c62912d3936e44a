#!/usr/bin/env python3
"""The "TLS" section of docs/benchmarks.md, from a loadtest/tls.sh run.

    tls_report.py OUT CONNECTIONS > section.md
"""

import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_lib  # noqa: E402
from bench_lib import mcorrect, mfig, mpct, mratio, runs, spread  # noqa: E402

bench_lib.out, connections = sys.argv[1], int(sys.argv[2])

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
pc, tc = runs("plain-connect"), runs("tls-connect")
pb, tb = runs("plain-broadcast"), runs("tls-broadcast")

print("## TLS: wss:// beside ws://")
print()
print(
    f"Produced by `loadtest/tls.sh` on {datetime.date.today()} at commit `{commit}`: one standalone "
    f"gateway with `--tls-cert`/`--tls-key` (an EC P-256 certificate) beside one without, fresh for each "
    f"run, the side that goes first alternating; {connections:,} connections opened at up to 4,000/s, "
    "then a broadcast to 1,000 members. The load generator does its half of every TLS handshake on "
    "the same two cores. Each figure is the median of the rounds, the min–max beside it."
)
print()
print("| figure | plain (ws://) | TLS (wss://) | TLS / plain |")
print("|---|---|---|---|")
rows = [
    ("handshakes/s", pc, tc, "handshakes/s", 0, "higher"),
    ("gateway CPU per handshake (µs)", pc, tc, "servers' CPU per handshake", 0, "lower"),
    ("gateway RSS per idle connection (KiB)", pc, tc, "server RSS per connection", 2, "lower"),
    ("broadcast: deliveries/s", pb, tb, "deliveries/s", 0, "higher"),
    ("broadcast: gateway CPU per delivery (µs)", pb, tb, "servers' CPU per delivery", 3, "lower"),
]
for label, p, t, name, digits, better in rows:
    a, b = mfig(p, name), mfig(t, name)
    # The last column is TLS's cost: how many times plain's figure.
    r = mratio(b, a, "higher") if better == "lower" else mratio(a, b, "higher")
    word = "more" if better == "lower" else "fewer"
    print(f"| {label} | {spread(a, digits)} | {spread(b, digits)} | {r} {word} |")
print(
    f"| handshake p99 (ms) | {spread(mpct(pc, 99, 'handshake'), 2)} | {spread(mpct(tc, 99, 'handshake'), 2)} | |"
)
print(f"| broadcast: latency p50 / p99 (ms) | {spread(mpct(pb, 50), 1)} / {spread(mpct(pb, 99), 1)} "
      f"| {spread(mpct(tb, 50), 1)} / {spread(mpct(tb, 99), 1)} | |")
print(f"| every message delivered once, in order | {mcorrect(pb)} | {mcorrect(tb)} | |")
