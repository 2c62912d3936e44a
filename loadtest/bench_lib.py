"""Reading loadtest's JSON runs for the benchmark reports (bench_report.py,
pair_report.py): medians with their min–max, ratios round by round."""

import json
import os
import statistics

# The directory the runs are in; set by the report before use.
out = "."


def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fig(run, name):
    if run is None:
        return None
    f = run["figures"].get(name)
    return None if f is None else f["value"]


def pct(run, p, hist="latency"):
    if run is None or hist not in run["histograms"]:
        return None
    return run["histograms"][hist][f"p{p}_us"] / 1000.0


def cmd(name):
    path = os.path.join(out, name + ".cmd")
    return open(path).read().strip() if os.path.exists(path) else "(not run)"


def num(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def ratio(a, b, better="higher"):
    if a is None or b is None or a == 0 or b == 0:
        return "–"
    r = a / b if better == "higher" else b / a
    return f"{r:.2f}×"


ROUNDS = 3


def runs(name):
    """The rounds of a side-by-side run (name-r1, -r2, …), or its one run."""
    found = [r for r in (load(f"{name}-r{i}") for i in range(1, 10)) if r is not None]
    if found:
        return found
    one = load(name)
    return [one] if one is not None else []


def spread(values, digits=0):
    """The median, and the min–max beside it when there are several runs."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return num(vals[0], digits)
    return f"{num(statistics.median(vals), digits)} ({num(min(vals), digits)}–{num(max(vals), digits)})"


def mfig(rs, name, scale=1.0):
    return [None if fig(r, name) is None else fig(r, name) * scale for r in rs]


def mpct(rs, p, hist="latency"):
    return [pct(r, p, hist) for r in rs]


def mratio(a, b, better="higher"):
    """Round by round a/b (or b/a when lower is better): median (min–max)."""
    rs = [(x / y if better == "higher" else y / x) for x, y in zip(a, b) if x and y]
    if not rs:
        return "–"
    if len(rs) == 1:
        return f"{rs[0]:.2f}×"
    return f"{statistics.median(rs):.2f}× ({min(rs):.2f}–{max(rs):.2f})"


def mcorrect(rs):
    if not rs:
        return "not run"
    return "yes" if all(r["correct"] for r in rs) else "NO"


def correct(run):
    if run is None:
        return "not run"
    return "yes" if run["correct"] else "NO"
