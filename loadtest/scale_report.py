#!/usr/bin/env python3
"""The "Scale" section of docs/benchmarks.md, from a loadtest/scale.sh run.

    scale_report.py OUT CONNECTIONS CLK_TCK GATEWAYS ROUTERS REPLICAS WORKERS CONNECT_RATE ALONE > section.md
    scale_report.py --into docs/benchmarks.md section.md

The section sits between two markers, so loadtest/bench.sh (which rewrites
the rest of the file) keeps it, and a new scale run replaces only it.
"""

import datetime
import json
import re
import subprocess
import sys
from collections import defaultdict

from sections import into


def single_gateway_kib(path="docs/benchmarks.md"):
    """The idle connection's RSS of one standalone gateway, from bench.sh's table."""
    try:
        for line in open(path):
            if line.startswith("| connect: RSS per idle connection (KiB)"):
                return float(line.split("|")[2].split()[0].replace(",", ""))
    except (FileNotFoundError, ValueError):
        pass
    return None


def num(v, digits=0):
    return f"{v:,.{digits}f}"


def main(out, connections, ticks, gateways, routers, replicas, workers, connect_rate, alone):
    connections, ticks, alone = int(connections), float(ticks), int(alone)
    samples = defaultdict(dict)  # label -> name -> (kind, rss KiB, cpu ticks)
    for line in open(f"{out}/process.samples"):
        label, kind, name, _pid, rss, cpu = line.split()
        samples[label][name] = (kind, int(rss), int(cpu))
    report = json.load(open(f"{out}/scale.json"))
    fig = {k: v["value"] for k, v in report["figures"].items()}
    hist = report["histograms"]
    cont = report["continuity"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    print("## Scale: connections across the cluster")
    print()
    print(
        f"Produced by `loadtest/scale.sh` on {datetime.date.today()} at commit `{commit}`: "
        f"nats-server, {routers} routers, {replicas} presence replicas and {gateways} gateways on this "
        f"machine's loopback, and {workers} load workers (`loadtest --workers`, each from its own source "
        f"address) opening {num(connections)} connections straight to the gateways at "
        f"{num(int(connect_rate))} handshakes/s, in rooms of "
        f"{report['params'].get('members', '?')} members; held idle through "
        f"{report['params'].get('hold', '?')} of heartbeats, then a chat load and one last message per "
        "room that every member must end with. Everything, load included, shares the two cores."
    )
    print()
    print(
        "| process kind | processes | RSS idle (MiB) | RSS holding every connection (MiB) | per connection (KiB) "
        "| CPU connecting (s) | CPU holding and messaging (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    kinds = defaultdict(lambda: [0, 0, 0, 0, 0])
    # Messaging ends at the "messaging" sample when there is one: the
    # connections' teardown after it is not messaging.
    end_label = "messaging" if samples.get("messaging") else "done"
    for name, (kind, rss, cpu) in samples["held"].items():
        idle = samples["idle"].get(name, (kind, 0, 0))
        done = samples[end_label].get(name, (kind, rss, cpu))
        k = kinds[kind]
        k[0] += 1
        k[1] += idle[1]
        k[2] += rss
        k[3] += (cpu - idle[2]) / ticks
        k[4] += (done[2] - cpu) / ticks
    per_conn = {}
    for kind in ["gateway", "router", "presence", "nats"]:
        if kind not in kinds:
            continue
        n, idle, held, connecting, messaging = kinds[kind]
        per = (held - idle) / connections
        per_conn[kind] = per
        print(
            f"| {kind} | {n} | {num(idle / 1024, 1)} | {num(held / 1024, 1)} | {num(per, 2)} "
            f"| {num(connecting, 1)} | {num(messaging, 1)} |"
        )
    print()
    deliveries, published = fig.get("deliveries", 0), fig.get("published", 0)
    varz = {}
    for label in ("held", end_label):
        try:
            varz[label] = json.load(open(f"{out}/varz-{label}.json"))
        except (OSError, ValueError):
            pass
    print(
        "Unit costs, from the same run, over the hold and the chat load (their heartbeats included; "
        "the teardown of every connection after it is not):"
    )
    print()
    print("| unit cost | value |")
    print("|---|---|")
    if "gateway" in kinds:
        print(f"| gateway CPU per handshake (µs) | {num(kinds['gateway'][3] * 1e6 / connections)} |")
        if deliveries:
            print(f"| gateway CPU per delivery (µs) | {num(kinds['gateway'][4] * 1e6 / deliveries, 2)} |")
    if "router" in kinds and published:
        print(f"| router CPU per publish (µs) | {num(kinds['router'][4] * 1e6 / published)} |")
    if "nats" in kinds and published:
        print(f"| nats-server CPU per publish (µs) | {num(kinds['nats'][4] * 1e6 / published)} |")
    if "presence" in kinds:
        print(f"| presence memory per connected user (bytes) | {num(per_conn['presence'] * 1024)} |")
    if "held" in varz:
        subs = varz["held"].get("subscriptions", 0)
        print(f"| NATS subscriptions while holding every connection (per connection) | {num(subs)} ({num(subs / connections, 2)}) |")
    if len(varz) == 2 and published:
        out_msgs = varz[end_label]["out_msgs"] - varz["held"]["out_msgs"]
        out_bytes = varz[end_label]["out_bytes"] - varz["held"]["out_bytes"]
        print(f"| NATS messages out per publish (to gateways and services) | {num(out_msgs / published, 1)} |")
        print(f"| NATS bytes out per publish | {num(out_bytes / published)} |")
    print()
    lat, hs = hist.get("latency", {}), hist.get("handshake", {})
    print("| figure | value |")
    print("|---|---|")
    print(f"| connections held at once | {num(fig.get('members held', 0))} of {num(connections)} |")
    print(f"| handshake p50 / p99 (ms) | {num(hs.get('p50_us', 0) / 1000, 2)} / {num(hs.get('p99_us', 0) / 1000, 2)} |")
    print(f"| published / acknowledged | {num(fig.get('published', 0))} / {num(fig.get('acknowledged', 0))} |")
    print(f"| deliveries (deliveries/s) | {num(fig.get('deliveries', 0))} ({num(fig.get('deliveries/s', 0))}) |")
    print(
        f"| publish → deliver p50 / p99 / p99.9 (ms) | {num(lat.get('p50_us', 0) / 1000, 2)} / "
        f"{num(lat.get('p99_us', 0) / 1000, 2)} / {num(lat.get('p99.9_us', 0) / 1000, 2)} |"
    )
    checked = fig.get("members checked at the end")
    of = (
        f"{num(checked)} checked (a reader still running 5 s after its connection closed is not)"
        if checked is not None
        else f"{num(connections)} (the rest were not checked: their reader was still running 5 s after the close)"
    )
    print(f"| members that got their room's last message | {num(fig.get('members at the end', 0))} of {of} |")
    print(f"| lost / duplicated or out of order / resyncs | {cont['lost']} / {cont['duplicated']} / {cont['resyncs']} |")
    print(f"| correct | {'yes' if report['correct'] else 'NO'} |")
    if "gateway" in per_conn:
        print()
        print(memory_comparison(samples, per_conn["gateway"], alone, int(gateways), report["params"].get("members")))


def memory_comparison(samples, cluster, alone, gateways, members):
    """The cluster's gateway memory per connection against one gateway alone."""
    fleet = "the gateway" if gateways == 1 else f"the {gateways} gateways"
    line = f"Each connection is held by one gateway: {fleet} grew by {num(cluster, 2)} KiB per connection"
    idle, held = samples.get("alone-idle", {}).get("gateway-alone"), samples.get("alone-held", {}).get("gateway-alone")
    if idle and held and alone and held[1] > idle[1]:
        single = (held[1] - idle[1]) / alone
        line += (
            f"; one gateway alone, in the same cluster after the run, grew by {num(single, 2)} KiB per "
            f"connection holding {num(alone)} (as many as each of them held) in rooms of {members}: "
            f"**{num(cluster / single, 2)}×**. A gateway follows every room it has a member in, so a room "
            "spread over every gateway is followed by each of them (a subscription and a task, "
            "`docs/scaling.md`): that, not the connections, is what grows with the number of gateways"
        )
    standalone = single_gateway_kib()
    if standalone:
        line += f". One standalone gateway in the benchmark above holds an idle connection, in no room, in {num(standalone, 2)} KiB"
    return line + "."


if __name__ == "__main__":
    if sys.argv[1] == "--into":
        into(sys.argv[2], "scale", sys.argv[3])
    else:
        main(*sys.argv[1:10])
