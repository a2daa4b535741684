#!/usr/bin/env python3
"""Draws the benchmark charts of docs/BENCHMARKS.md as plain SVG.

    scripts/charts.py [DIR]          DIR/data/NAME.csv -> DIR/NAME.svg
    scripts/charts.py --check [DIR]  every DIR/*.svg is well-formed SVG

DIR defaults to docs/charts. Python's standard library only (no plotting
package, no network), so the bench scripts can run it anywhere
(benches/bench-env.sh, bench_charts). Every CSV has a `date` column: the
run its figures come from, printed under the chart's title.

Charts, by CSV name:
  vs-redis          date,pairing,pipeline,test,round,redis_rps,kvstore_rps,ratio[,binary_rps,binary_ratio[,redis_cpu_us,kvstore_cpu_us[,redis_client_cpu_pct,kvstore_client_cpu_pct]]]
                    (scripts/bench-vs-redis.sh): the median of the
                    same-round ratios kvstore / Redis per cell, each round
                    as a dot, lines at 1.0 and at the 1.1 target.
  latency           date,durability,pipeline,op,p50_ms,p99_ms,p999_ms,max_ms
                    (benches/server.sh): latency percentiles per test, log
                    scale.
  replication-lag   date,config,replica,t_s,lag_ms (benches/replication.sh,
                    one row per probe): lag over time, one line per replica
                    and load; or date,config,replica,stat,lag_ms (a
                    summary: p50, p99) drawn as bars.
  failover          date,ttl_ms,failover,gap_ms (benches/failover.sh, one
                    row per failover; the label may also be a statistic):
                    the write gap of each failover against TTL + 1 s.
"""
import csv
import math
import statistics
import sys
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

W, H = 760, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 62, 96
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1:
        return f"{v:g}"
    return f"{v:.2g}"


class Axis:
    """A y axis from 0 (or a power of ten, on a log scale) to past `top`."""

    def __init__(self, values, log=False):
        values = [v for v in values if v > 0] or [1.0]
        self.log = log
        if log:
            self.lo = 10 ** math.floor(math.log10(min(values)))
            self.hi = 10 ** math.ceil(math.log10(max(values)))
            if self.hi <= self.lo:
                self.hi = self.lo * 10
            n = round(math.log10(self.hi / self.lo))
            self.ticks = [self.lo * 10 ** i for i in range(n + 1)]
        else:
            top = max(values)
            step = 10 ** math.floor(math.log10(top))
            for m in (1, 2, 5, 10):
                if top / (step * m) <= 6:
                    step *= m
                    break
            self.lo, self.hi = 0.0, math.ceil(top / step) * step
            self.ticks = [i * step for i in range(int(round(self.hi / step)) + 1)]

    def y(self, v):
        span = H - TOP - BOTTOM
        if self.log:
            v = max(v, self.lo)
            f = math.log10(v / self.lo) / math.log10(self.hi / self.lo)
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return H - BOTTOM - f * span


class Svg:
    def __init__(self, title, subtitle, ylabel):
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" '
            f'font-weight="bold">{escape(title)}</text>',
            f'<text x="{W / 2}" y="40" text-anchor="middle" fill="#555">{escape(subtitle)}</text>',
            f'<text transform="translate(16,{(TOP + H - BOTTOM) / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(ylabel)}</text>',
        ]

    def add(self, s):
        self.parts.append(s)

    def axis(self, axis):
        for t in axis.ticks:
            y = axis.y(t)
            self.add(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            self.add(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
        self.add(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#333"/>')
        self.add(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="#333"/>')

    def reference(self, axis, value, label):
        y = axis.y(value)
        self.add(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                 f'stroke="#c00" stroke-dasharray="6,4"/>')
        self.add(f'<text x="{W - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" '
                 f'fill="#c00">{escape(label)}</text>')

    def legend(self, names):
        x = LEFT
        for i, name in enumerate(names):
            c = COLORS[i % len(COLORS)]
            self.add(f'<rect x="{x}" y="{H - 22}" width="12" height="12" fill="{c}"/>')
            self.add(f'<text x="{x + 16}" y="{H - 12}">{escape(name)}</text>')
            x += 24 + 7 * len(name)

    def text(self):
        return "\n".join(self.parts + ["</svg>", ""])


def bars(svg, axis, groups, series, value, dots=None):
    """Grouped bars: value(group, series) -> number or None; dots(group,
    series) -> extra points drawn over the bar."""
    svg.axis(axis)
    slot = (W - LEFT - RIGHT) / max(1, len(groups))
    width = slot * 0.8 / max(1, len(series))
    for gi, g in enumerate(groups):
        x0 = LEFT + gi * slot + slot * 0.1
        for si, s in enumerate(series):
            v = value(g, s)
            if v is None:
                continue
            x = x0 + si * width
            y = axis.y(v)
            c = COLORS[si % len(COLORS)]
            svg.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.9:.1f}" '
                    f'height="{H - BOTTOM - y:.1f}" fill="{c}"><title>{escape(g)} '
                    f'{escape(s)}: {v:g}</title></rect>')
            for d in (dots(g, s) if dots else []):
                svg.add(f'<circle cx="{x + width * 0.45:.1f}" cy="{axis.y(d):.1f}" r="3" '
                        f'fill="white" stroke="#222"/>')
        label_x = LEFT + gi * slot + slot / 2
        for li, line in enumerate(g.split("\n")):
            svg.add(f'<text x="{label_x:.1f}" y="{H - BOTTOM + 16 + 13 * li}" '
                    f'text-anchor="middle" font-size="11">{escape(line)}</text>')


def rows(path):
    with open(path, newline="") as f:
        out = [r for r in csv.DictReader(f)]
    if not out:
        raise SystemExit(f"{path}: no rows")
    return out


def dates(rs):
    return ", ".join(sorted({r["date"] for r in rs}))


def uniq(xs):
    return list(dict.fromkeys(xs))


def num(s):
    return float(s) if s not in ("", None) else None


def vs_redis(rs):
    key = lambda r: (r["pairing"], r["pipeline"], r["test"])
    groups = uniq(key(r) for r in rs)
    ratios = {g: [float(r["ratio"]) for r in rs if key(r) == g and r["ratio"]] for g in groups}
    med = {g: statistics.median(v) for g, v in ratios.items() if v}
    labels = {g: f"{g[0]}\n-P {g[1]} {g[2]}" for g in groups}
    svg = Svg("kvstore / Redis, redis-benchmark -c 50 -d 100",
              f"median of same-round ratios (dots: rounds); interval: Redis everysec, kvstore 1 s; never: Redis without persistence; {dates(rs)}", "kvstore ÷ Redis")
    axis = Axis(list(med.values()) + [d for v in ratios.values() for d in v] + [1.2])
    by_label = {labels[g]: g for g in groups}
    bars(svg, axis, [labels[g] for g in groups], ["median ratio"],
         lambda lab, _: med.get(by_label[lab]), lambda lab, _: ratios[by_label[lab]])
    svg.reference(axis, 1.0, "Redis")
    svg.reference(axis, 1.1, "target 1.1x")
    svg.legend(["median of rounds"])
    return svg


def latency(rs):
    stats = [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"), ("max_ms", "max")]
    label = lambda r: f"{r['durability']} -P {r['pipeline']}\n{r['op']}"
    by = {label(r): r for r in rs}
    svg = Svg("Latency per request, kvstore bench -c 50 -d 100",
              f"one run per line; {dates(rs)}", "ms (log scale)")
    vals = [num(r[k]) for r in rs for k, _ in stats if num(r[k])]
    axis = Axis(vals, log=True)
    names = [n for _, n in stats]
    col = dict((n, k) for k, n in stats)
    bars(svg, axis, list(by), names, lambda g, s: num(by[g][col[s]]))
    svg.legend(names)
    return svg


def replication_lag(rs):
    if "t_s" not in rs[0]:
        label = lambda r: f"{r['config']}\n{r['replica']}"
        groups = uniq(label(r) for r in rs)
        stats_ = uniq(r["stat"] for r in rs)
        val = {(label(r), r["stat"]): float(r["lag_ms"]) for r in rs}
        svg = Svg("Replica lag (20 ms probe: write on the master, read on each replica)",
                  f"{dates(rs)}", "lag, ms (log scale)")
        axis = Axis(list(val.values()), log=True)
        bars(svg, axis, groups, stats_, lambda g, s: val.get((g, s)))
        svg.legend(stats_)
        return svg
    series = uniq(f"{r['config']}, {r['replica']}" for r in rs)
    pts = {s: [] for s in series}
    for r in rs:
        pts[f"{r['config']}, {r['replica']}"].append((float(r["t_s"]), float(r["lag_ms"])))
    svg = Svg("Replica lag over time (20 ms probe)", f"{dates(rs)}", "lag, ms (log scale)")
    axis = Axis([y for p in pts.values() for _, y in p], log=True)
    svg.axis(axis)
    tmax = max((x for p in pts.values() for x, _ in p), default=1.0) or 1.0
    sx = lambda t: LEFT + t / tmax * (W - LEFT - RIGHT)
    for i, s in enumerate(series):
        path = " ".join(f"{sx(x):.1f},{axis.y(y):.1f}" for x, y in sorted(pts[s]))
        svg.add(f'<polyline points="{path}" fill="none" stroke="{COLORS[i % len(COLORS)]}" '
                f'stroke-width="1"/>')
    for t in range(0, int(tmax) + 1, max(1, int(tmax) // 8 or 1)):
        svg.add(f'<text x="{sx(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{t} s</text>')
    svg.legend(series)
    return svg


def failover(rs):
    labels = [r["failover"] for r in rs]
    gap = {r["failover"]: float(r["gap_ms"]) for r in rs}
    ttl = float(rs[0]["ttl_ms"])
    svg = Svg(f"Unplanned failover (SIGKILL of the master), lease TTL {ttl / 1000:g} s",
              f"time to the first acknowledged write on the new master; {dates(rs)}",
              "write gap, ms")
    axis = Axis(list(gap.values()) + [ttl + 1000])
    bars(svg, axis, labels, ["write gap"], lambda g, _: gap[g])
    svg.reference(axis, ttl + 1000, "target: TTL + 1 s")
    svg.legend(["write gap"])
    return svg


CHARTS = {"vs-redis": vs_redis, "latency": latency,
          "replication-lag": replication_lag, "failover": failover}


def render(out_dir):
    made = []
    for path in sorted((out_dir / "data").glob("*.csv")):
        draw = CHARTS.get(path.stem)
        if draw is None:
            raise SystemExit(f"{path}: no chart is named {path.stem!r} ({', '.join(CHARTS)})")
        svg = out_dir / f"{path.stem}.svg"
        svg.write_text(draw(rows(path)).text())
        made.append(svg)
    if not made:
        raise SystemExit(f"no CSV in {out_dir / 'data'}")
    for svg in made:
        check(svg)
        print(f"charts: wrote {svg}")


def check(path):
    root = ElementTree.parse(path).getroot()
    if root.tag != "{http://www.w3.org/2000/svg}svg":
        raise SystemExit(f"{path}: the root element is {root.tag}, not svg")
    if not list(root):
        raise SystemExit(f"{path}: an empty chart")


def main(argv):
    checking = "--check" in argv
    args = [a for a in argv if a != "--check"]
    out_dir = Path(args[0] if args else Path(__file__).resolve().parent.parent / "docs/charts")
    if checking:
        svgs = sorted(out_dir.glob("*.svg"))
        if not svgs:
            raise SystemExit(f"no SVG in {out_dir}")
        for svg in svgs:
            check(svg)
        print(f"charts: {len(svgs)} valid SVG files in {out_dir}")
    else:
        render(out_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
