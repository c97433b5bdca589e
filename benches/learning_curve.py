#!/usr/bin/env python3
"""Draws fine-tuning learning curves from `optimize --report` files.

    python3 benches/learning_curve.py OUT.svg "LABEL=REPORT.json" ["LABEL=REPORT.json" ...]

Each report's `learning.training.evaluations` become one line: held-out top-1 agreement
with the original (y) against the training samples seen (x, log scale), the weights the
run wrote ringed. It also writes OUT.csv beside the SVG, one row per evaluation.
Standard library only.
"""

import csv
import json
import math
import sys
from pathlib import Path

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 64, 250, 24, 52
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]


def curve(label, report_path):
    try:
        report = json.loads(Path(report_path).read_text())
        training = report["learning"]["training"]
        points = [(e["samples_seen"], e["agreement"], e["loss"], e["step"]) for e in training["evaluations"]]
    except (OSError, ValueError) as e:
        sys.exit(f"{report_path}: not a readable report: {e}")
    except (KeyError, TypeError) as e:
        sys.exit(f"{report_path}: no fine-tuning measurements with samples seen (missing {e}); it must come from `optimize --finetune --report`")
    if not points or any(a is None for _, a, _, _ in points):
        sys.exit(f"{report_path}: no held-out agreement measured (the model has no class output)")
    return {"label": label, "points": points, "best_step": training["best_step"]}


def scales(curves):
    seen = [p[0] for c in curves for p in c["points"] if p[0] > 0]
    low = 2 ** math.floor(math.log2(min(seen)))
    high = 2 ** math.ceil(math.log2(max(seen)))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(samples):
        # Before training (0 samples) sits half a doubling left of the axis' first tick.
        value = max(samples, low / math.sqrt(2))
        return LEFT + plot_w * (math.log2(value) - math.log2(low / math.sqrt(2))) / (
            math.log2(high) - math.log2(low / math.sqrt(2))
        )

    def y(agreement):
        return TOP + plot_h * (1.0 - agreement)

    return x, y, low, high


def svg(curves):
    x, y, low, high = scales(curves)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    for percent in range(0, 101, 20):
        yy = y(percent / 100)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">{percent} %</text>')
    tick = low
    while tick <= high:
        xx = x(tick)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{tick:,}</text>')
        tick *= 2
    if any(p[0] == 0 for c in curves for p in c["points"]):
        out.append(f'<text x="{x(0):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">0</text>')
    out.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle">training crops seen (log scale)</text>'
    )
    out.append(
        f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">held-out top-1 agreement</text>'
    )
    for i, c in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(s):.1f},{y(a):.1f}" for s, a, _, _ in c["points"])
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for s, a, _, step in c["points"]:
            out.append(f'<circle cx="{x(s):.1f}" cy="{y(a):.1f}" r="2.5" fill="{colour}"/>')
            if step == c["best_step"]:
                out.append(f'<circle cx="{x(s):.1f}" cy="{y(a):.1f}" r="6" fill="none" stroke="{colour}"/>')
        ly = TOP + 8 + 18 * i
        lx = WIDTH - RIGHT + 16
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 24}" y="{ly + 4}">{c["label"]}</text>')
    ly = TOP + 8 + 18 * len(curves) + 8
    out.append(f'<text x="{WIDTH - RIGHT + 16}" y="{ly}" fill="#555">ringed: the weights written</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) < 3 or not all("=" in a for a in argv[2:]):
        sys.exit(__doc__)
    out = Path(argv[1])
    curves = [curve(*a.split("=", 1)) for a in argv[2:]]
    out.write_text(svg(curves))
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["run", "step", "samples_seen", "agreement", "loss", "written"])
        for c in curves:
            for s, a, loss, step in c["points"]:
                rows.writerow([c["label"], step, s, f"{a:.4f}", f"{loss:.4f}", int(step == c["best_step"])])
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main(sys.argv)
