"""The figures of ``docs/benchmarks.md`` (matplotlib's object API, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

METHODS = ("erm", "fl", "rfl", "alm")


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def p3(r: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(13, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 0.7]})
    runs = {
        "one process\n(core.fit)": r["one_process_s"],
        "one process\n(fit_unit)": r["one_process_packed_s"],
        "plain Tune": r["plain_tune"]["wall_s"],
        "dualtune\npack: off": r["unpacked"]["wall_s"],
        "dualtune\npack: auto": r["packed"]["wall_s"],
    }
    bars = left.bar(list(runs), list(runs.values()), color=["#999", "#999", "C1", "C3", "C0"])
    left.bar_label(bars, fmt="%.1f")
    left.set_ylabel("wall time (s)")
    left.set_title(f"{r['trials']} trials, {r['cpus']} CPUs; P3 = {r['packed_over_plain']:.3f}")
    left.tick_params(axis="x", labelsize=8)
    timeline = r["breakdown"]["timeline"]
    inside = r["breakdown"]["critical_categories"]
    _stacked(right, timeline, inside)
    _save(fig, path)


def _stacked(ax: Axes, timeline: dict[str, float], inside: dict[str, float]) -> None:
    """The critical path as one stacked bar, the trial itself split by kind beside it."""
    bottom = 0.0
    for i, (label, seconds) in enumerate(timeline.items()):
        ax.bar(0, seconds, bottom=bottom, color=f"C{i}", label=label)
        bottom += seconds
    bottom = 0.0
    for i, (label, seconds) in enumerate(inside.items()):
        color = f"C{(i + len(timeline)) % 10}"
        ax.bar(1, seconds, bottom=bottom, color=color, label=f"trial: {label}")
        bottom += seconds
    ax.set_xticks([0, 1], ["Tuner.fit\n(critical path)", "the trial\n(run_unit)"])
    ax.set_ylabel("s")
    ax.set_title("packed sweep, instrumented")
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def p6(r: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(13, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 0.9]})
    joined = r.get("cli_joined", {})
    runs = {
        "dualtune run": r["cli"]["wall_s"],
        **({"dualtune run\n(joins Ray)": joined["wall_s"]} if "wall_s" in joined else {}),
        "one pack\n(fit_unit)": r["one_pack_s"],
        "for-loop of fit\n(script)": r["loop_script_s"],
        "for-loop of fit\n(in process)": r["loop_in_process_s"],
    }
    colors = (
        ["C0", "C2", "#999", "C1", "#bbb"] if "wall_s" in joined else ["C0", "#999", "C1", "#bbb"]
    )
    bars = left.bar(list(runs), list(runs.values()), color=colors)
    left.bar_label(bars, fmt="%.1f")
    left.set_ylabel("wall time (s)")
    left.set_title(
        f"{r['trials']} trials × {r['epochs']} epochs, {r['cpus']} CPUs; "
        f"P6a = {r['P6a']:.2f}, P6b = {r['P6b']:.2f}"
    )
    left.tick_params(axis="x", labelsize=8)
    timelines = {
        label: run["breakdown"]["timeline"]
        for label, run in (("own Ray", r["cli_instrumented"]), ("joins Ray", joined))
        if "timeline" in run.get("breakdown", {})
    }
    for x, timeline in enumerate(timelines.values()):
        bottom = 0.0
        for i, (stage, seconds) in enumerate(timeline.items()):
            right.bar(x, seconds, bottom=bottom, color=f"C{i}", label=stage if x == 0 else None)
            bottom += seconds
    right.set_xticks(list(range(len(timelines))), [f"dualtune run\n({k})" for k in timelines])
    right.set_ylabel("s")
    right.set_title("dualtune run, timed")
    if timelines:
        right.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, path)


def p1p2(r: dict[str, Any], path: Path) -> None:
    rows = r["problems"]
    fig = Figure(figsize=(5 * len(rows), 3.8))
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    width = 0.4
    for ax, row in zip(axes, rows, strict=True):
        xs = range(len(METHODS))
        off = [row["step_ms"][m] for m in METHODS]
        on = [row["member_step_ms"][m] for m in METHODS]
        ax.bar([x - width / 2 for x in xs], off, width, label="packing off")
        packed = f"pack of {r['pack_size']}, per trial"
        ax.bar([x + width / 2 for x in xs], on, width, label=packed)
        ax.axhline(row["step_ms"]["cooper_fl"], color="k", ls="--", lw=1, label="Cooper FL")
        ax.set_xticks(list(xs), list(METHODS))
        ax.set_ylabel("ms per step per trial")
        ax.set_title(row["problem"], fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)


def scaling(k: dict[str, Any], n: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(11, 3.8))
    a, b, c = fig.subplots(1, 3)
    ks = [row["k"] for row in k["rows"]]
    a.plot(ks, [1e3 * row["pack_epoch_s"] for row in k["rows"]], "o-", label="pack epoch")
    a.plot(ks, [1e3 * row["unpacked_times_k_s"] for row in k["rows"]], "s--", label="K × unpacked")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("pack size K")
    a.set_ylabel("ms per epoch")
    a.set_title("digits MLP [64], batch 64", fontsize=9)
    a.legend(fontsize=7)
    b.plot(ks, [row["speedup"] for row in k["rows"]], "o-")
    b.axhline(1.0, color="k", lw=0.8)
    b.set_xscale("log", base=2)
    b.set_xlabel("pack size K")
    b.set_ylabel("speed-up over K unpacked trials")
    b.set_title("digits MLP [64], batch 64", fontsize=9)
    ns = [row["n"] for row in n["rows"]]
    c.plot(ns, [row["unpacked_epoch_s"] for row in n["rows"]], "s--", label="unpacked trial")
    c.plot(ns, [row["pack_epoch_s"] for row in n["rows"]], "o-", label=f"pack of {n['k']}")
    c.plot(ns, [row["per_member_s"] for row in n["rows"]], "^:", label="pack, per trial")
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel("training samples n")
    c.set_ylabel("s per epoch")
    c.set_title(f"two moons MLP 70-70, batch {n['batch']}", fontsize=9)
    c.legend(fontsize=7)
    _save(fig, path)


def memory(m: dict[str, Any], path: Path) -> None:
    problems = m["problems"]
    fig = Figure(figsize=(5 * len(problems), 3.8))
    axes = fig.subplots(1, len(problems), squeeze=False)[0]
    for ax, p in zip(axes, problems, strict=True):
        ks = [row["k"] for row in p["rows"]]
        rss = [row["peak_rss_growth"] for row in p["rows"]]
        if all(v is not None for v in rss):
            ax.plot(ks, [v / 1e6 for v in rss], "o-", label="peak RSS growth")
        ax.plot(ks, [row["tensor_bytes"] / 1e6 for row in p["rows"]], "s--", label="tensors")
        est = p["member_bytes_estimate"]
        ax.plot(ks, [k * est / 1e6 for k in ks], ":", label="K × member_bytes")
        ax.set_xlabel("pack size K")
        ax.set_ylabel("MB")
        ax.set_title(p["problem"], fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)


def draw(results: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if "p3" in results:
        p3(results["p3"], directory / "p3.png")
    if "p6" in results:
        p6(results["p6"], directory / "p6.png")
    if "p1p2" in results:
        p1p2(results["p1p2"], directory / "p1p2.png")
    if "scaling_k" in results:
        scaling(results["scaling_k"], results["scaling_n"], directory / "scaling.png")
    if "memory" in results:
        memory(results["memory"], directory / "memory.png")
