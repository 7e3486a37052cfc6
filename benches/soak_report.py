#!/usr/bin/env python3
"""Summarises a benches/soak.sh run: rates per phase, resident memory and its
trend, and per window close -> spooled lag, training and self-evaluation
seconds. Writes OUT/soak.svg (RSS and accepted spans/s every 10 s).

Usage: benches/soak_report.py OUT_DIR RATE
"""
import csv
import datetime
import re
import sys

out, rate = sys.argv[1], float(sys.argv[2])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
for r in rows:
    for k in r:
        if k != "phase":
            r[k] = float(r[k])


def phase(name):
    return [r for r in rows if r["phase"] == name]


def accepted_rate(ps):
    if len(ps) < 2:
        return 0.0
    return (ps[-1]["accepted"] - ps[0]["accepted"]) / (ps[-1]["time"] - ps[0]["time"])


def slope_mib_per_min(ps):
    """Least-squares slope of RSS over the second half of a phase."""
    ps = ps[len(ps) // 2:]
    if len(ps) < 2:
        return 0.0
    xs = [p["time"] / 60 for p in ps]
    ys = [p["rss_mib"] for p in ps]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


receiver = accepted_rate(phase("receiver-only"))
print(f"receiver only (pipeline off), as fast as accepted: {receiver:,.0f} spans/s")
for name in ["fixed-rate", "unlimited"]:
    ps = phase(name)
    if not ps:
        continue
    r = accepted_rate(ps)
    refused = ps[-1]["refused"] - ps[0]["refused"]
    rss = [p["rss_mib"] for p in ps]
    print(
        f"{name}: accepted {r:,.0f} spans/s ({r / receiver:.2f}x the receiver alone), "
        f"refused {refused:,.0f} spans, RSS {min(rss):.0f}-{max(rss):.0f} MiB "
        f"(second half trend {slope_mib_per_min(ps):+.1f} MiB/min), "
        f"resident spans up to {max(p['resident_spans'] for p in ps):,.0f}"
    )
print(f"(fixed rate asked: {rate:,.0f} spans/s)")

stamp = re.compile(r"^(\S+Z)\s+\w+\s+\S+: (.*)$")
field = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
closed, shipped = {}, {}
for line in open(f"{out}/compressor-pipeline.log"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = stamp.match(line)
    if not m:
        continue
    when = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
    fields = {k: v.strip('"') for k, v in field.findall(m.group(2))}
    if "window closed" in m.group(2) and "window" in fields:
        closed[fields["window"]] = (when, fields)
    elif "window spooled for the link" in m.group(2) and "window" in fields:
        shipped[fields["window"]] = (when, fields)
print("window  spans       close->spooled s  train s  evaluate s  kind")
worst = 0.0
for w in sorted(closed, key=int):
    t0, c = closed[w]
    if w not in shipped:
        print(f"{w:>6}  {c.get('spans', '?'):>10}  not spooled")
        continue
    t1, s = shipped[w]
    worst = max(worst, t1 - t0)
    print(
        f"{w:>6}  {int(c.get('spans', 0)):>10,}  {t1 - t0:16.1f}  {float(s.get('train_seconds', 0)):7.1f}  "
        f"{float(s.get('evaluate_seconds', 0)):10.1f}  {s.get('kind', '?')}"
    )
print(f"longest close -> spooled: {worst:.1f} s")

# The plot: RSS (MiB) and accepted spans/s against minutes.
points = [r for r in rows if r["phase"] != "receiver-only"]
if len(points) >= 2:
    t0 = points[0]["time"]
    width, height, pad = 720, 360, 50
    minutes = [(p["time"] - t0) / 60 for p in points]
    rates = [0.0] + [
        (b["accepted"] - a["accepted"]) / max(b["time"] - a["time"], 1) for a, b in zip(points, points[1:])
    ]
    rss = [p["rss_mib"] for p in points]
    xmax = max(minutes) or 1
    rss_max = max(max(rss), 600) * 1.1
    rate_max = max(max(rates), rate) * 1.1

    def poly(values, vmax, colour):
        pts = " ".join(
            f"{pad + m / xmax * (width - 2 * pad):.1f},{height - pad - v / vmax * (height - 2 * pad):.1f}"
            for m, v in zip(minutes, values)
        )
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'

    limit_y = height - pad - 600 / rss_max * (height - 2 * pad)
    svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">gent compressor soak: resident memory (blue, MiB, left) and accepted spans/s (orange, right), every 10 s</text>
<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>
<line x1="{width - pad}" y1="{pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>
<line x1="{pad}" y1="{limit_y:.1f}" x2="{width - pad}" y2="{limit_y:.1f}" stroke="red" stroke-dasharray="4"/>
<text x="{pad + 4}" y="{limit_y - 4:.1f}" fill="red">600 MiB</text>
<text x="{pad - 4}" y="{pad}" text-anchor="end">{rss_max:.0f}</text>
<text x="{width - pad + 4}" y="{pad}">{rate_max:,.0f}</text>
<text x="{width / 2}" y="{height - 15}" text-anchor="middle">minutes ({xmax:.1f})</text>
{poly(rss, rss_max, "steelblue")}
{poly(rates, rate_max, "darkorange")}
</svg>
"""
    open(f"{out}/soak.svg", "w").write(svg)
    print(f"plot: {out}/soak.svg")
