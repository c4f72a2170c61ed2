"""``make bench``: run every benchmark and write ``docs/benchmarks.md``."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from bench import machine, service_load, step_overhead, sweep_overhead

OUT = Path("docs/benchmarks.md")


def _p1p2(result: dict[str, Any]) -> list[str]:
    lines = [
        "| problem | erm ms/step | fl | rfl | alm | cooper fl ms/step | P1 fl | P1 rfl | P1 alm "
        "| P2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["problems"]:
        ms, p1 = row["step_ms"], row["P1"]
        lines.append(
            f"| {row['problem']} | {ms['erm']:.3f} | {ms['fl']:.3f} | {ms['rfl']:.3f} | "
            f"{ms['alm']:.3f} | {ms['cooper_fl']:.3f} | {p1['fl']:.3f} | {p1['rfl']:.3f} | "
            f"{p1['alm']:.3f} | {row['P2']:.3f} |"
        )
    return lines


def _verdicts(p: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = ["## Against the targets", ""]
    for row in p["problems"]:
        worst = max(row["P1"].values())
        lines.append(
            f"* P1 on {row['problem']}: worst {worst:.3f} — "
            + ("**met** (≤ 1.05)." if worst <= 1.05 else "**missed** (target ≤ 1.05).")
            + f" P2 {row['P2']:.3f} — "
            + ("**met** (≤ 0.8)." if row["P2"] <= 0.8 else "**missed** (target ≤ 0.8).")
        )
    lines += [
        "",
        "The constrained step adds a fixed cost per step (gather the batch's multipliers, the "
        "weighted sum, the dual update and scatter back: a handful of small kernels, "
        "≈0.05–0.1 ms on this CPU). On a model whose ERM step is 0.3 ms that is 15–40 %; on a "
        "3 ms step it is ≈5 %. Against Cooper the saving is the same fixed cost: large on small "
        "models, smaller on larger ones.",
        "",
        f"* Sweep: dualtune takes {s['dualtune_over_plain_tune']:.2f}× the wall time of plain "
        "Ray Tune on the same grid (it also checkpoints at every evaluation, logs every metric, "
        "per-sample tables and plots to MLflow). Both are far from the "
        f"{s['one_process_s']:.0f} s the trials take in one process: Ray's per-trial start-up "
        "dominates small trials. Trial packing (several trials per Ray trial) is what closes "
        "that gap; it is not built yet.",
        "",
    ]
    return lines


def main() -> None:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    p = step_overhead.main([])
    s = sweep_overhead.main([])
    load = service_load.main([])
    OUT.write_text(render(p, s, started) + "\n" + "\n".join(service_load.render(load)) + "\n")
    print(f"wrote {OUT}")


def render(p: dict[str, Any], s: dict[str, Any], started: str) -> str:
    text = [
        "# Benchmarks",
        "",
        f"Machine: {machine.describe()}. Run {started} with `make bench` "
        f"(`{sys.executable} -m bench.run_all`). Ratios are taken within one run.",
        "",
        "## P1 / P2: the cost of a constrained step",
        "",
        "P1 = step time of the method ÷ ERM's on the same model and batches (target ≤ 1.05); "
        "P2 = dualtune's FL step ÷ Cooper 1.0.1's FL step on the same problem (target ≤ 0.8). "
        f"Median of {7} interleaved rounds of 200 steps, 1 thread.",
        "",
        *_p1p2(p),
        "",
        "## Sweep wall time: `examples/fl_vs_erm.yaml`",
        "",
        f"{s['trials']} trials on {s['cpus']} CPUs.",
        "",
        "| run | wall time (s) |",
        "|---|---|",
        f"| the trials one after another in one process (`core.fit`) | {s['one_process_s']:.1f} |",
        f"| plain Ray Tune, one bare trial per config (no tracking, no checkpoints) | "
        f"{s['plain_tune_s']:.1f} |",
        f"| dualtune (`run_sweep`: Tune + MLflow + checkpoints + per-sample artifacts) | "
        f"{s['dualtune_s']:.1f} |",
        "",
        f"dualtune ÷ plain Tune = {s['dualtune_over_plain_tune']:.2f}; "
        f"dualtune ÷ one process = {s['dualtune_over_one_process']:.2f}.",
        "",
        *_verdicts(p, s),
    ]
    return "\n".join(text)


if __name__ == "__main__":
    main()
