"""``make bench``: run every benchmark and write ``docs/benchmarks.md``."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from bench import machine, step_overhead, sweep_overhead

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


def main() -> None:
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    p = step_overhead.main([])
    s = sweep_overhead.main([])
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
    ]
    OUT.write_text("\n".join(text))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
