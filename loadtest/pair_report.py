#!/usr/bin/env python3
"""A section of docs/benchmarks.md from a loadtest/pair.sh run: two ways of
serving one load (TLS beside plain, SSE beside WebSocket), median of the
rounds with the min–max, and the second side's cost as a multiple of the
first's.

    pair_report.py tls|sse OUT CONNECTIONS > section.md
"""

import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_lib  # noqa: E402
from bench_lib import mcorrect, mfig, mpct, mratio, runs, spread  # noqa: E402

kind, bench_lib.out, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
made = f"Produced by `loadtest/pair.sh {kind}` on {datetime.date.today()} at commit `{commit}`"
load = (
    f"fresh for each run, the side that goes first alternating; {connections:,} connections opened at up to "
    "4,000/s, then a broadcast to 1,000 members from 2 publishers. Each figure is the median of the rounds, "
    "the min–max beside it."
)
KINDS = {
    "tls": (
        "## TLS: wss:// beside ws://",
        f"{made}: one standalone gateway with `--tls-cert`/`--tls-key` (an EC P-256 certificate) beside one "
        f"without, {load} The load generator does its half of every TLS handshake on the same two cores.",
        ("plain", "plain (ws://)"),
        ("tls", "TLS (wss://)"),
        "TLS / plain",
    ),
    "sse": (
        "## SSE beside WebSocket",
        f"{made}: one standalone gateway, driven over WebSocket and over its SSE transport (events from "
        f"`GET /sse`, every op a POST on a kept-alive connection, members and publishers alike), {load} "
        "An SSE handshake is the GET and its `hello`; a publish is acknowledged on the stream.",
        ("ws", "WebSocket"),
        ("sse", "SSE"),
        "SSE / WebSocket",
    ),
    "deflate": (
        "## Compression: permessage-deflate beside plain",
        f"{made}: one standalone gateway with `--compression` and clients that offer permessage-deflate "
        f"(loadtest --protocol switchboard-deflate) beside one without, {load} Messages are 1 KiB of JSON "
        "whose text is words, as chat is; replies and joins are small and go uncompressed.",
        ("plain", "plain"),
        ("deflate", "compressed"),
        "compressed / plain",
    ),
}
title, text, (a_name, a_label), (b_name, b_label), ratio_label = KINDS[kind]
ac, bc = runs(f"{a_name}-connect"), runs(f"{b_name}-connect")
ab, bb = runs(f"{a_name}-broadcast"), runs(f"{b_name}-broadcast")

print(title)
print()
print(text)
print()
print(f"| figure | {a_label} | {b_label} | {ratio_label} |")
print("|---|---|---|---|")
rows = [
    ("handshakes/s", ac, bc, "handshakes/s", 0, "higher"),
    ("gateway CPU per handshake (µs)", ac, bc, "servers' CPU per handshake", 0, "lower"),
    ("gateway RSS per idle connection (KiB)", ac, bc, "server RSS per connection", 2, "lower"),
    ("broadcast: deliveries/s", ab, bb, "deliveries/s", 0, "higher"),
    ("broadcast: gateway CPU per delivery (µs)", ab, bb, "servers' CPU per delivery", 3, "lower"),
    # Read as "the second side receives N× fewer bytes".
    ("broadcast: bytes received per delivery", ab, bb, "received bytes per delivery", 0, "higher"),
]
for label, x, y, name, digits, better in rows:
    fx, fy = mfig(x, name), mfig(y, name)
    if all(v is None for v in fx + fy):
        continue  # a figure these runs do not report
    # The last column is the second side's cost: how many times the first's figure.
    r = mratio(fy, fx, "higher") if better == "lower" else mratio(fx, fy, "higher")
    word = "more" if better == "lower" else "fewer"
    print(f"| {label} | {spread(fx, digits)} | {spread(fy, digits)} | {r} {word} |")
print(f"| handshake p99 (ms) | {spread(mpct(ac, 99, 'handshake'), 2)} | {spread(mpct(bc, 99, 'handshake'), 2)} | |")
print(
    f"| broadcast: latency p50 / p99 (ms) | {spread(mpct(ab, 50), 1)} / {spread(mpct(ab, 99), 1)} "
    f"| {spread(mpct(bb, 50), 1)} / {spread(mpct(bb, 99), 1)} | |"
)
print(f"| every message delivered once, in order | {mcorrect(ab)} | {mcorrect(bb)} | |")
