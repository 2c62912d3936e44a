#!/usr/bin/env python3
"""Turns the JSON figures of loadtest/bench.sh into docs/benchmarks.md."""

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_lib  # noqa: E402
from bench_lib import *  # noqa: E402,F401,F403

out = bench_lib.out = sys.argv[1]


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    nofile = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
    return cpu, os.cpu_count(), mem, platform.release(), commit, nofile


gb, pb = runs("gateway-broadcast"), runs("peer-broadcast")
g5, p5 = runs("gateway-broadcast5000"), runs("peer-broadcast5000")
gc, pc = runs("gateway-chat"), runs("peer-chat")
gn, pn = runs("gateway-connect"), runs("peer-connect")
cpu, cores, mem, kernel, commit, nofile = machine()

print(f"""# Benchmarks

Produced by `loadtest/bench.sh` on {datetime.now(timezone.utc):%Y-%m-%d} at commit `{commit}`, and
rewritten by every run. The load generator, the servers and (for the cluster)
nats-server all share one machine, so a figure here is a property of this
machine and this run. The point of comparison is the `ws` peer measured in the
same run (`loadtest/peers/ws-rooms`: one Node.js process, the `ws` package,
rooms in memory), which a team would otherwise write.

## Machine

| | |
|---|---|
| CPU | {cpu}, {cores} cores |
| memory | {mem} |
| kernel | {kernel} |
| open files per process (hard limit) | {nofile} |

## Switchboard (standalone gateway) against the `ws` peer

| figure | gateway | peer | gateway/peer |
|---|---|---|---|
| broadcast: fanout deliveries/s | {spread(mfig(gb, "deliveries/s"))} | {spread(mfig(pb, "deliveries/s"))} | **{mratio(mfig(gb, "deliveries/s"), mfig(pb, "deliveries/s"))}** |
| broadcast: publishes/s accepted | {spread(mfig(gb, "publish rate"))} | {spread(mfig(pb, "publish rate"))} | {mratio(mfig(gb, "publish rate"), mfig(pb, "publish rate"))} |
| broadcast: latency p50 / p99 (ms) | {spread(mpct(gb, 50), 1)} / {spread(mpct(gb, 99), 1)} | {spread(mpct(pb, 50), 1)} / {spread(mpct(pb, 99), 1)} | |
| broadcast: server CPU per delivery (µs) | {spread(mfig(gb, "servers' CPU per delivery"), 3)} | {spread(mfig(pb, "servers' CPU per delivery"), 3)} | {mratio(mfig(gb, "servers' CPU per delivery"), mfig(pb, "servers' CPU per delivery"), "lower")} |
| broadcast at 5,000 members: deliveries/s | {spread(mfig(g5, "deliveries/s"))} | {spread(mfig(p5, "deliveries/s"))} | {mratio(mfig(g5, "deliveries/s"), mfig(p5, "deliveries/s"))} |
| broadcast at 5,000 members: server CPU per delivery (µs) | {spread(mfig(g5, "servers' CPU per delivery"), 3)} | {spread(mfig(p5, "servers' CPU per delivery"), 3)} | **{mratio(mfig(g5, "servers' CPU per delivery"), mfig(p5, "servers' CPU per delivery"), "lower")}** |
| chat: deliveries/s (fixed offered load) | {spread(mfig(gc, "deliveries/s"))} | {spread(mfig(pc, "deliveries/s"))} | |
| chat: latency p50 / p99 (ms) | {spread(mpct(gc, 50), 2)} / {spread(mpct(gc, 99), 2)} | {spread(mpct(pc, 50), 2)} / {spread(mpct(pc, 99), 2)} | {mratio(mpct(gc, 99), mpct(pc, 99), "lower")} (p99) |
| chat: server CPU per delivery (µs) | {spread(mfig(gc, "servers' CPU per delivery"), 2)} | {spread(mfig(pc, "servers' CPU per delivery"), 2)} | {mratio(mfig(gc, "servers' CPU per delivery"), mfig(pc, "servers' CPU per delivery"), "lower")} |
| connect: connections held | {spread(mfig(gn, "held"))} | {spread(mfig(pn, "held"))} | |
| connect: handshake p99 (ms) | {spread(mpct(gn, 99, "handshake"), 2)} | {spread(mpct(pn, 99, "handshake"), 2)} | {mratio(mpct(gn, 99, "handshake"), mpct(pn, 99, "handshake"), "lower")} |
| connect: server CPU per handshake (µs) | {spread(mfig(gn, "servers' CPU per handshake"))} | {spread(mfig(pn, "servers' CPU per handshake"))} | {mratio(mfig(gn, "servers' CPU per handshake"), mfig(pn, "servers' CPU per handshake"), "lower")} |
| connect: RSS per idle connection (KiB) | {spread(mfig(gn, "server RSS per connection"), 2)} | {spread(mfig(pn, "server RSS per connection"), 2)} | {mratio(mfig(gn, "server RSS per connection"), mfig(pn, "server RSS per connection"), "lower")} smaller |
| every message delivered once, in order | {mcorrect(gb + g5)}, {mcorrect(gc)} | {mcorrect(pb + p5)}, {mcorrect(pc)} | |

Each figure is the median of {max(len(gb), 1)} runs per side, with the min–max beside it; the
two sides ran one right after the other in each round, the side that went first
alternating. A ratio is taken round by round and its median shown with its range.
Server CPU is the server process's own user + system time over the run
(`/proc/<pid>/stat`, `--server-pid`), divided by what it delivered or accepted:
the cost a client-side throughput figure hides.

Broadcast: 1000 (and 5,000, for 20 s) members in one room, two of them publishing as fast as a
window of 64 unacknowledged publishes allows. Chat: 200 rooms of 5 members,
each member publishing 4 messages per second (4,000 messages/s in all,
below what either side saturates at). Connect: connections opened at
2000 per second and held idle. Ratios put the better side on top ("higher is
better" for throughput, "lower is better" for latency and memory).

## The cluster: rooms in memory or in JetStream

Two gateways, two routers, presence and nats-server (`deploy/local/cluster.sh`),
with 200 rooms of 5 members spread over both gateways: first with rooms in
the routers' memory (`STORE=memory`), then in JetStream on the same
nats-server (`--history-store jetstream`, one replica), one after the other.
With JetStream a publish is acknowledged only after JetStream stored the
message and the room's entry: two round trips to nats-server before the
owner emits it.
""")

print("| published msgs/s | memory p50 (ms) | JetStream p50 (ms) | memory p99 (ms) | JetStream p99 (ms) | p99 JetStream/memory | deliveries/s memory / JetStream | correct |")
print("|---|---|---|---|---|---|---|---|")
for rate in (1000, 5000, 10000, 20000):
    m, j = load(f"cluster-memory-chat-{rate}"), load(f"cluster-jetstream-chat-{rate}")
    print(
        f"| {num(fig(j, 'publish rate'))} | {num(pct(m, 50), 2)} | {num(pct(j, 50), 2)} | {num(pct(m, 99), 2)} | "
        f"{num(pct(j, 99), 2)} | {ratio(pct(j, 99), pct(m, 99))} | {num(fig(m, 'deliveries/s'))} / "
        f"{num(fig(j, 'deliveries/s'))} | {correct(m)} / {correct(j)} |"
    )

rm, rj = load("cluster-memory-room"), load("cluster-jetstream-room")
km, kj = load("cluster-memory-kill"), load("cluster-jetstream-kill")


def cont(run, key):
    return None if run is None else run["continuity"][key]


print(f"""
**One room's publish ceiling.** Four publishers in one room of 10 members,
each with 64 publishes in flight, as fast as the room takes them. With
JetStream the owner keeps one write in flight per room (each names the
stream sequence the previous one got: that is the fence), so a room takes
one message per store round trip; many rooms write in parallel.

| figure | memory | JetStream | JetStream/memory |
|---|---|---|---|
| publishes/s into one room | {num(fig(rm, "publish rate"))} | {num(fig(rj, "publish rate"))} | {ratio(fig(rj, "publish rate"), fig(rm, "publish rate"))} |
| deliveries/s | {num(fig(rm, "deliveries/s"))} | {num(fig(rj, "deliveries/s"))} | {ratio(fig(rj, "deliveries/s"), fig(rm, "deliveries/s"))} |
| latency p50 (ms) | {num(pct(rm, 50), 2)} | {num(pct(rj, 50), 2)} | {ratio(pct(rj, 50), pct(rm, 50))} |
| latency p99 (ms) | {num(pct(rm, 99), 2)} | {num(pct(rj, 99), 2)} | {ratio(pct(rj, 99), pct(rm, 99))} |
| correct | {correct(rm)} | {correct(rj)} | |

**A router killed.** The chat load at 2,000 publishes/s for 20 s; 5 s in,
`kill -9` of router-1. Its rooms pause until the other router sees it gone
(the 2 s TTL) and takes them: in memory on a new epoch (members get
`resync`, messages in flight are lost), from JetStream on the same epoch.
The longest publish → deliver time is the pause.

| figure | memory | JetStream |
|---|---|---|
| longest publish → deliver (s) | {num(None if pct(km, 100) is None else pct(km, 100) / 1000, 2)} | {num(None if pct(kj, 100) is None else pct(kj, 100) / 1000, 2)} |
| latency p99 (ms) | {num(pct(km, 99), 2)} | {num(pct(kj, 99), 2)} |
| resyncs seen by members | {num(cont(km, "resyncs"))} | {num(cont(kj, "resyncs"))} |
| messages lost (gaps) | {num(cont(km, "lost"))} | {num(cont(kj, "lost"))} |
| duplicates | {num(cont(km, "duplicated"))} | {num(cont(kj, "duplicated"))} |
| every message once, in order, no resync | {correct(km)} | {correct(kj)} |""")



def all_seated(run):
    return run is not None and fig(run, "time to seat") is not None and fig(run, "seated") == fig(run, "connected")


def seat_cpu(run):
    """CPU per join, only for a run that seated everyone."""
    return fig(run, "server CPU per join") if all_seated(run) else None


def seated(run):
    """Time to seat everyone, or how many were seated before the timeout."""
    if run is None:
        return "not run"
    got, want = fig(run, "seated"), fig(run, "connected")
    if all_seated(run):
        return f"{fig(run, 'time to seat'):.2f} s"
    timeout = run["params"].get("timeout", "?")
    return f"not seated ({num(got)} of {num(want)} in {timeout})"


SEAT_SIZES = (1000, 5000, 10000)
print("""
## Seating one room: the cost of announcing joins

N distinct users join one room at once (connections first, then every join
together); a member is seated when its join is answered and the count it
keeps from the answer and the membership events says everyone is in. The
room's namespace decides what members hear: `all` sends `joined` per user
(N²/2 frames), `batched` one `members_changed` per 100 ms window, `off`
nothing. The peer sends nothing or, with `--announce`, `joined` per join like
the Socket.IO chat example. CPU is the server process's own (user + system,
from /proc) while seating, per join only where everyone was seated. "count-only" are members whose join answer more
events overtook than the gateway keeps per room (128): they get one
`members_changed` with the exact count instead of the events.

| members | namespace | gateway: seated in | frames/member | count-only | server CPU (s) | CPU/join (µs) | peer: seated in | peer CPU/join (µs) | CPU/join, gateway/peer |
|---|---|---|---|---|---|---|---|---|---|""")
for n in SEAT_SIZES:
    for mode in ("batched", "off", "all"):
        g, p = load(f"gateway-seat-{mode}-{n}"), load(f"peer-seat-{mode}-{n}")
        peer = (seated(p), num(seat_cpu(p))) if mode != "batched" else ("(none)", "–")
        print(
            f"| {n:,} | `{mode}` | {seated(g)} | {num(fig(g, 'frames per member'), 2)} | "
            f"{num(fig(g, 'count-only catch-ups'))} | {num(fig(g, 'server CPU'), 2)} | "
            f"{num(seat_cpu(g))} | {peer[0]} | {peer[1]} | "
            f"{ratio(seat_cpu(g), seat_cpu(p), 'lower') if mode != 'batched' else ''} |"
        )
b1, b10 = load("gateway-seat-batched-1000"), load("gateway-seat-batched-10000")
growth = ratio(fig(b1, "server CPU per join"), fig(b10, "server CPU per join"), "lower")
print(f"""
With `batched`, CPU per join at 10,000 members is {growth} of what it is at
1,000 (the target: within 2×), and seating 10,000 members took
{num(fig(b10, "server CPU"), 2)} s of gateway CPU (the target: under 2 s).""")

hu, hh = runs("gateway-chat-unhooked"), runs("gateway-chat-hooked")
print(f"""
## Publishing through a publish hook

The chat load above at half its rate (200 rooms of 5, 2,000 publishes/s)
against a standalone gateway whose rooms call a `publish` hook before every
message (a Node.js backend on loopback that approves each at once,
`loadtest/peers/hook-backend`), beside the same load without the hook, run
one after the other (three rounds, medians with min–max).

| figure | without hook | with publish hook | with/without |
|---|---|---|---|
| deliveries/s | {spread(mfig(hu, "deliveries/s"))} | {spread(mfig(hh, "deliveries/s"))} | |
| latency p50 (ms) | {spread(mpct(hu, 50), 2)} | {spread(mpct(hh, 50), 2)} | {mratio(mpct(hh, 50), mpct(hu, 50))} |
| latency p99 (ms) | {spread(mpct(hu, 99), 2)} | {spread(mpct(hh, 99), 2)} | {mratio(mpct(hh, 99), mpct(hu, 99))} |
| every message delivered once, in order | {mcorrect(hu)} | {mcorrect(hh)} | |

The hook adds one HTTP round trip (pooled connection) to each publish before
the room's owner sees it; "with/without" is how many times longer a
message takes end to end. The backend is a single Node.js process on the
same two cores as the gateway and the load generator: at the full 4,000
publishes/s of the chat load the three together saturate both cores, and the
hooked side's latency then grows with its queue (p99 of 0.3–1.4 s in four
runs), which says more about this machine than about the hook.""")

ah, ag = runs("gateway-api-http"), runs("gateway-api-grpc")
print(f"""
## The server API: HTTP/JSON and gRPC

`publish` calls against a standalone gateway's server API from 32 callers,
each with rooms of its own and one call in flight: over HTTP/JSON
(`POST /api/publish`, a keep-alive connection per caller) and over gRPC
`Rooms.Publish` (one HTTP/2 channel, as a backend would share it), run one
after the other (three rounds, medians). Each call is sequenced by the room's owner and answered
with its seq; every room's seqs must come back 1, 2, 3, … for the run to
count as correct.

| figure | HTTP/JSON | gRPC | HTTP/gRPC |
|---|---|---|---|
| calls/s | {spread(mfig(ah, "calls/s"))} | {spread(mfig(ag, "calls/s"))} | {mratio(mfig(ah, "calls/s"), mfig(ag, "calls/s"))} |
| latency p50 (ms) | {spread(mpct(ah, 50), 2)} | {spread(mpct(ag, 50), 2)} | {mratio(mpct(ah, 50), mpct(ag, 50), 'lower')} |
| latency p99 (ms) | {spread(mpct(ah, 99), 2)} | {spread(mpct(ag, 99), 2)} | {mratio(mpct(ah, 99), mpct(ag, 99), 'lower')} |
| every call answered, seqs in order | {mcorrect(ah)} | {mcorrect(ag)} | |

Ratios above 1× favour HTTP/JSON. The load generator runs on the same two
cores as the gateway; with bodies this small, HTTP/2's framing and flow
control (client and server) cost more per call than HTTP/1.1 and JSON, so
the JSON API is the faster of the two here.""")

print("""
## Commands

Every run writes its table (`.txt`), figures (`.json`) and plot (`.svg`) to
`target/bench/`; a side-by-side run's rounds are `-r1`, `-r2`, `-r3` (the
first is listed).

```""")
for name in (*(f"{side}-{what}-r1" for what in ("broadcast", "broadcast5000", "chat", "connect")
               for side in ("gateway", "peer")),
             *(f"cluster-{store}-{what}" for store in ("memory", "jetstream")
               for what in ("chat-1000", "chat-5000", "chat-10000", "chat-20000", "room", "kill")),
             "gateway-chat-unhooked-r1", "gateway-chat-hooked-r1", "gateway-api-http-r1", "gateway-api-grpc-r1",
             *(f"{side}-seat-{mode}-{n}" for n in SEAT_SIZES for side, mode in
               (("gateway", "batched"), ("gateway", "off"), ("gateway", "all"), ("peer", "off"), ("peer", "all")))):
    print(f"{name}: {cmd(name)}")
print("```")

here = os.path.dirname(os.path.abspath(__file__))
notes = os.path.join(here, "bench_notes.md")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())

# The Scale, TLS and SSE sections belong to loadtest/scale.sh and pair.sh: keep them as they were.
sys.path.insert(0, here)
from sections import OWNED, kept  # noqa: E402

for name in OWNED:
    section = kept(os.path.join(here, "..", "docs", "benchmarks.md"), name)
    if section:
        print()
        print(section)
