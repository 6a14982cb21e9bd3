"""Draw a results file of bench/run.py as a PNG (matplotlib, Agg backend: no display needed).

    python bench/chart.py RESULTS.json [-o OUT.png]

An endpoint run (the default mode of run.py): grouped bars of successful requests per second,
one panel per backend, authsvc beside the do-it-yourself baseline: token checks (authsvc /me,
JWKS and /introspect beside baseline /protected), refresh (authsvc /refresh, a real rotation,
beside baseline /refresh) and login (authsvc /login beside baseline /login and the raw argon2
verification rate with as many processes as gunicorn workers). The y axis is logarithmic: the
rates span two orders of magnitude. A scale run (run.py --scale): login and refresh req/s and
p99 per user count, with the p99 ratio against the issue's target.

OUT.png defaults to RESULTS with the suffix .png. Needs the `bench` extra (pip install -e
'.[bench]'); run.py --chart calls draw() after writing its results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

AUTHSVC, BASELINE, ARGON2 = "#1f77b4", "#ff7f0e", "#7f7f7f"
BACKEND_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL + Redis"}
# (group label, [(server, endpoint, bar label)]); server "argon2" is the raw verification rate.
GROUPS = [
    (
        "token check",
        [
            ("authsvc", "me", "/me"),
            ("authsvc", "jwks", "JWKS"),
            ("authsvc", "introspect", "/introspect"),
            ("baseline", "protected", "/protected"),
        ],
    ),
    ("refresh", [("authsvc", "refresh", "/refresh"), ("baseline", "refresh", "/refresh")]),
    (
        "login",
        [
            ("authsvc", "login", "/login"),
            ("baseline", "login", "/login"),
            ("argon2", None, "raw argon2"),
        ],
    ),
]
COLORS = {"authsvc": AUTHSVC, "baseline": BASELINE, "argon2": ARGON2}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("matplotlib is not installed") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(report: dict, backend: str) -> list[tuple[str, list[tuple[str, str, float, int]]]]:
    """Per group, the bars present in the results: (server, label, req/s, failed requests)."""
    run = report["runs"][backend]
    argon2 = report.get("argon2_verifies_per_second", {}).get(str(run["workers"]))
    groups = []
    for group, members in GROUPS:
        bars = []
        for server, endpoint, label in members:
            if server == "argon2":
                if argon2:
                    processes = run["workers"]
                    bars.append((server, f"{label}\n({processes} proc)", argon2, 0))
                continue
            figures = run.get(server, {}).get("endpoints", {}).get(endpoint)
            if figures is None:
                continue
            failed = figures["non_2xx_3xx"] + figures["socket_errors"] + figures["timeouts"]
            bars.append((server, label, figures["rps"], failed))
        if bars:
            groups.append((group, bars))
    return groups


def _endpoint_panel(ax, report: dict, backend: str) -> None:
    run = report["runs"][backend]
    x, ticks, labels, group_centres = 0.0, [], [], []
    for group, bars in _bars(report, backend):
        start = x
        for server, label, rps, failed in bars:
            ax.bar(x, max(rps, 0.1), width=0.8, color=COLORS[server], edgecolor="black", lw=0.5)
            text = f"{rps:.0f}" if rps >= 10 else f"{rps:.1f}"
            if failed:
                text += f"\n{failed} failed"
            ax.annotate(
                text,
                (x, max(rps, 0.1)),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
            ticks.append(x)
            labels.append(label)
            x += 1
        group_centres.append(((start + x - 1) / 2, group))
        x += 0.8  # a gap between groups
    ax.set_yscale("log")
    # Bars on a log axis start at a power of ten below the smallest, not at an arbitrary edge.
    rates = [max(rps, 0.1) for _, bars in _bars(report, backend) for _, _, rps, _ in bars]
    # Headroom above the tallest bar for its label.
    ax.set_ylim(10 ** math.floor(math.log10(min(rates))), max(rates) * 1.6)
    ax.set_xticks(ticks, labels, rotation=35, ha="right", fontsize=8)
    for centre, group in group_centres:
        ax.annotate(
            group,
            (centre, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            xytext=(0, 4),
            textcoords="offset points",
        )
    ax.set_ylabel("successful requests/s (log scale)")
    title = BACKEND_TITLES.get(backend, backend)
    ax.set_title(f"{title}: {run['workers']} worker(s) x {run['threads']} threads", pad=22)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)


def _legend(fig, servers: list[str]) -> None:
    from matplotlib.patches import Patch

    names = {
        "authsvc": "authsvc",
        "baseline": "do-it-yourself baseline (flask-jwt-extended tutorial)",
        "argon2": "raw argon2 verifications, processes = workers",
    }
    handles = [Patch(facecolor=COLORS[s], edgecolor="black", label=names[s]) for s in servers]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def _subtitle(report: dict) -> str:
    settings, params = report.get("settings", {}), report.get("argon2_params", {})
    parts = [report.get("started", "")]
    if settings:
        parts.append(
            f"{settings.get('duration_s')} s per endpoint, {settings.get('connections')} "
            "connections" + (", --quick" if settings.get("quick") else "")
        )
    if params:
        parts.append(
            f"argon2id {params.get('memory_kib')} KiB, t={params.get('time_cost')}, "
            f"p={params.get('parallelism')}"
        )
    return "; ".join(p for p in parts if p)


def _draw_endpoints(plt, report: dict):
    backends = [b for b in ("sqlite", "postgres") if b in report["runs"]]
    backends += [b for b in report["runs"] if b not in backends]
    if not backends:
        raise ValueError("the results file has no completed run to draw")
    fig, axes = plt.subplots(1, len(backends), figsize=(6.5 * len(backends), 5.8), squeeze=False)
    for ax, backend in zip(axes[0], backends, strict=True):
        _endpoint_panel(ax, report, backend)
    fig.suptitle(f"authsvc beside the baseline: requests/s per endpoint\n{_subtitle(report)}")
    _legend(fig, ["authsvc", "baseline", "argon2"])
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _draw_scale(plt, report: dict):
    points = sorted(report["scale"].items(), key=lambda item: int(item[0]))
    if not points:
        raise ValueError("the results file has no completed scale run to draw")
    endpoints = list(points[0][1]["endpoints"])
    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(12, 5.2))
    width = 0.8 / len(points)
    steps = max(len(points) - 1, 1)
    shades = plt.get_cmap("Blues")([0.45 + 0.5 * i / steps for i in range(len(points))])
    for i, (users, point) in enumerate(points):
        xs = [j + (i - (len(points) - 1) / 2) * width for j in range(len(endpoints))]
        for ax, key, digits in ((rate_ax, "rps", 0), (p99_ax, "p99_ms", 1)):
            values = [point["endpoints"][name][key] for name in endpoints]
            bars = ax.bar(
                xs,
                values,
                width=width,
                color=shades[i],
                edgecolor="black",
                lw=0.5,
                label=f"{int(users):,} users",
            )
            ax.bar_label(bars, fmt=f"%.{digits}f", fontsize=7, padding=2)
    for ax, ylabel in ((rate_ax, "successful requests/s"), (p99_ax, "p99 latency, ms")):
        ax.set_xticks(range(len(endpoints)), [f"/{name}" for name in endpoints])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8)
    rate_ax.set_title("requests/s by users in the database")
    ratios = report.get("ratios", {})
    notes = []
    for name in endpoints:
        r = ratios.get(f"{name}_p99_scale")
        if r and r.get("value") is not None:
            met = {True: "met", False: "MISSED", None: "-"}[r.get("met")]
            notes.append(f"/{name} {r['value']} ({met})")
    target = next((r["target"] for r in ratios.values() if "target" in r), "")
    p99_ax.set_title(f"p99; largest/smallest N {target}: " + ", ".join(notes), fontsize=9)
    fig.suptitle(
        f"authsvc on PostgreSQL + Redis, {report.get('workers')} worker(s) x "
        f"{report.get('threads')} threads, by users in the database\n{_subtitle(report)}"
    )
    fig.tight_layout()
    return fig


def draw(report: dict, output: Path) -> Path:
    """Draw ``report`` (a parsed results file) to the PNG ``output``; returns ``output``."""
    plt = _pyplot()
    if report.get("mode") == "scale":
        fig = _draw_scale(plt, report)
    else:
        fig = _draw_endpoints(plt, report)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results JSON file written by bench/run.py")
    parser.add_argument("-o", "--output", type=Path, help="the PNG (default: RESULTS.png)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.results.read_text())
        out = draw(report, args.output or args.results.with_suffix(".png"))
    except ImportError as error:
        print(f"chart: {error}; pip install -e '.[bench]'", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as error:
        print(f"chart: cannot draw {args.results}: {error!r}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
