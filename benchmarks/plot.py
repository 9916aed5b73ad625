"""Draw a run's results as one PNG: grouped bars per part (run by the peers' venv python).

benchmarks/.peers/venv/bin/python benchmarks/plot.py results.json performance.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import LABELS, Results

COLOURS = {
    "tusd-py": "#1f77b4",
    "tusd-py-redis": "#6baed6",
    "tusd-py-w2": "#08519c",
    "tusd-py-redis-w2": "#9ecae1",
    "tusd-py-s3": "#1f77b4",
    "sink": "#7f7f7f",
    "s3-direct": "#7f7f7f",
    "tus-node": "#2ca02c",
    "tus-node-s3": "#2ca02c",
    "tuspyserver": "#ff7f0e",
}


def grouped(
    ax: plt.Axes, title: str, unit: str, groups: list[str], series: dict[str, list[float | None]]
) -> None:
    width = 0.8 / max(1, len(series))
    for i, (server, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        heights = [v or 0 for v in values]
        bars = ax.bar(
            xs,
            heights,
            width,
            label=LABELS.get(server, server),
            color=COLOURS.get(server),
            hatch="//" if server.endswith("-s3") else None,  # S3 beside file in one panel
        )
        for bar, value in zip(bars, values, strict=True):
            if value:
                ax.annotate(
                    f"{value:.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.legend(fontsize=7)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    res = Results(results)
    panels = []
    for part, title in (
        ("file", "File store, one large upload"),
        ("s3", "S3 (moto), one large upload"),
    ):
        clients = res.clients(part)
        if not clients:
            continue
        servers = [s for s in res.servers(part) if s != "s3-direct"]
        series = {s: [res.mib_s(part, s, c) for c in clients] for s in servers}
        if part == "s3" and res.summary(part, "s3-direct"):
            series["s3-direct"] = [res.mib_s(part, "s3-direct")] * len(clients)
        panels.append((title, "MiB/s (median)", clients, series))
    clients = res.clients("concurrency")
    if clients:
        servers = res.servers("concurrency")
        series = {
            s: [(x.mib_s if (x := res.summary("concurrency", s, c)) else None) for c in clients]
            for s in servers
        }
        panels.append(("Many uploads at once", "MiB/s (median)", clients, series))
    clients = res.clients("small")
    if clients:
        servers = res.servers("small")
        series = {
            s: [(x.median("rps") if (x := res.summary("small", s, c)) else None) for c in clients]
            for s in servers
        }
        panels.append(("Small requests", "requests/s (median)", clients, series))
    if not panels:
        raise SystemExit("nothing to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
    for ax, (title, unit, groups, series) in zip(axes[:, 0], panels, strict=True):
        grouped(ax, title, unit, groups, series)
    env = results["environment"]
    fig.suptitle(f"tusd-py benchmarks, {env['date']}, commit {env['commit']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
