"""``make bench``: run every benchmark and write ``docs/benchmarks.md`` with its figures
(``docs/benchmarks/*.png``) and raw numbers (``docs/benchmarks/results.json``).

    python -m bench.run_all                 # everything (P1/P2, P3, P6, scaling, memory,
                                            # P5, fairness, P4)
    python -m bench.run_all --only p6,p3,p1 # just these (p1 = p1p2)
    python -m bench.run_all --only fairness # dualtune against Fairlearn
    python -m bench.run_all --only early_stopping  # against every trial to the end, Ray ASHA
    python -m bench.run_all --skip p4       # all but these
    python -m bench.run_all --render-only   # re-render from docs/benchmarks/results.json

A part not run keeps its numbers from the previous run (``results.json``; the P4 section
from the document) and the document says which run they come from. Every verdict is
computed from the numbers of the run it reports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import early_stopping, fairness, figures, machine

OUT = Path("docs/benchmarks.md")
FIGURES = Path("docs/benchmarks")
RESULTS = FIGURES / "results.json"
PARTS = ("p1p2", "scaling", "memory", "p5", "p3", "p6", "fairness", "early_stopping", "p4")
ALIASES = {"p1": "p1p2", "p2": "p1p2"}
RESULT_KEYS = {
    "p1p2": ("p1p2",),
    "scaling": ("scaling_k", "scaling_n"),
    "memory": ("memory",),
    "p5": ("p5",),
    "p3": ("p3",),
    "p6": ("p6",),
    "fairness": ("fairness",),
    "early_stopping": ("early_stopping",),
}
"""The keys of ``results.json`` each part writes (P4 writes its section's text)."""
P4_HEADING = "## P4:"
NO_GPU = "no GPU was lent to this task; P1 and P3 on GPU not measured"


def _met(ok: bool, target: str) -> str:
    return "**met**" if ok else f"**missed** (target {target})"


# -- sections -------------------------------------------------------------------------------
def _p1p2(r: dict[str, Any]) -> list[str]:
    k = r["pack_size"]
    lines = [
        "## P1 / P2: the cost of a constrained step, packing off and on",
        "",
        "P1 = step time of the method ÷ ERM's on the same model and batches (target ≤ 1.10 on "
        "the digits MLP, ≤ 1.05 on the Fashion-MNIST MLP); "
        "P2 = dualtune's FL step ÷ Cooper 1.0.1's FL step on the same problem (target ≤ 0.8). "
        "**Off**: the step an unpacked trial runs (`Trainer`). **On**: a pack of "
        f"K = {k} trials that differ in lr (`PackTrainer`), its step time ÷ {k} (per trial). "
        "ALM at ρ = 0.01 (at ρ = 1 the Fashion-MNIST trial went NaN within 200 steps). "
        f"Median of {r['repeats']} interleaved rounds of {r['steps']} steps "
        f"({r['steps'] // 4} for a pack), {r['threads']} torch thread, timed by the "
        f"{'training thread’s CPU time' if r.get('clock') == 'thread' else 'wall clock'}, "
        "plain SGD (lr 0.01) "
        "on both sides, real data (`bench/step_overhead.py`).",
        "",
        "| problem | packing | erm ms/step | fl | rfl | alm | cooper fl | P1 fl | P1 rfl "
        "| P1 alm | P2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["problems"]:
        for label, ms, p1, p2 in (
            ("off", row["step_ms"], row["P1"], row["P2"]),
            (f"on (K={k}, per trial)", row["member_step_ms"], row["P1_packed"], row["P2_packed"]),
        ):
            lines.append(
                f"| {row['problem']} | {label} | {ms['erm']:.3f} | {ms['fl']:.3f} | "
                f"{ms['rfl']:.3f} | {ms['alm']:.3f} | {row['step_ms']['cooper_fl']:.3f} | "
                f"{p1['fl']:.3f} | {p1['rfl']:.3f} | {p1['alm']:.3f} | {p2:.3f} |"
            )
    lines += ["", "Per-trial step time in a pack ÷ the unpacked step:", ""]
    lines += ["| problem | erm | fl | rfl | alm |", "|---|---|---|---|---|"]
    for row in r["problems"]:
        g = row["packed_over_unpacked"]
        lines.append(
            f"| {row['problem']} | {g['erm']:.2f} | {g['fl']:.2f} | {g['rfl']:.2f} | "
            f"{g['alm']:.2f} |"
        )
    lines += ["", "![P1/P2 step times](benchmarks/p1p2.png)", ""]
    for row in r["problems"]:
        for label, p1, p2 in (
            ("off", row["P1"], row["P2"]),
            ("on", row["P1_packed"], row["P2_packed"]),
        ):
            worst, target = max(p1.values()), row.get("p1_target", 1.05)
            lines.append(
                f"* {row['problem']}, packing {label}: P1 worst {worst:.3f} — "
                f"{_met(worst <= target, f'≤ {target:.2f}')}; P2 {p2:.3f} — "
                f"{_met(p2 <= 0.8, '≤ 0.8')}."
            )
    lines.append("")
    return lines


def _p3(r: dict[str, Any]) -> list[str]:
    b = r["breakdown"]
    ratio, target = r["packed_over_plain"], r["target"]
    rows = [
        ("the 27 trials one after another in one process (`core.fit`)", r["one_process_s"]),
        ("the 27 trials as one pack in one process (`fit_unit`)", r["one_process_packed_s"]),
        (
            "plain Ray Tune, one bare trial per config (`core.fit`; no tracking, no checkpoints)",
            r["plain_tune"]["wall_s"],
        ),
        (
            f"dualtune `run_sweep`, `pack: off` ({r['unpacked']['units']} Tune trials)",
            r["unpacked"]["wall_s"],
        ),
        (
            f"dualtune `run_sweep`, `pack: auto` ({r['packed']['units']} Tune trials)",
            r["packed"]["wall_s"],
        ),
    ]
    lines = [
        "## P3: a 27-config grid, packed, against plain Ray Tune",
        "",
        f"`bench/p3_grid.yaml`: {r['trials']} FL trials on sklearn digits (MLP [64], 5 epochs, "
        "batch 64, SGD momentum 0.9; ε × dual lr × lr = 3 × 3 × 3, seed 0) on "
        f"{r['cpus']} CPUs. The Ray Tune runs share one `ray.init` "
        f"({r['ray_init_s']:.1f} s, not counted) in one process; dualtune logs every metric, "
        "per-sample tables, plots and checkpoints to a fresh MLflow SQLite store (created "
        "before the clock starts) and local Tune storage (`bench/packing.py`).",
        "",
        "| run | wall time (s) |",
        "|---|---|",
        *(f"| {label} | {seconds:.1f} |" for label, seconds in rows),
        "",
        f"**P3 = dualtune (packed) ÷ plain Tune = {ratio:.3f}** — "
        f"{_met(ratio <= target, f'≤ {target}')}. dualtune `pack: off` ÷ plain Tune = "
        f"{r['unpacked_over_plain']:.2f}; dualtune (packed) ÷ the same pack in one process = "
        f"{r['packed_over_one_process_packed']:.0f}.",
        "",
        "![P3 wall times and the packed sweep's breakdown](benchmarks/p3.png)",
        "",
        "### Where the packed sweep's time goes",
        "",
        "The packed sweep once more, under a second `ray.init` whose worker processes time "
        "their pieces (`bench/timers.py`: a Ray `worker_process_setup_hook` wraps the pack "
        "trainable, `PackTrainer` and the MLflow logger when they are imported, and times the "
        "first import of torch, torch._dynamo (the first torch optimizer a process builds imports "
        "it), sklearn, matplotlib, MLflow, pandas, pyarrow, SQLAlchemy apart; "
        "every piece counts its own time without the timed pieces inside it). "
        f"Wall time {b['wall_s']:.1f} s, of which `Tuner.fit` {b['fit_s']:.1f} s.",
        "",
        "The Tune trial that finished last (the critical path), from `Tuner.fit`'s start:",
        "",
        "| stage | s |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in b["timeline"].items()),
        "",
        "Inside that trial (`run_unit`), by kind:",
        "",
        "| kind | s |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in b["critical_categories"].items()),
        "",
        "The driver outside `Tuner.fit`:",
        "",
        "| piece | s |",
        "|---|---|",
        *(f"| {k.removeprefix('driver: ')} | {v:.2f} |" for k, v in b["driver"].items()),
        f"| untimed | {b['driver_untimed_s']:.2f} |",
        "",
        f"Every piece, summed over the {len(b['units'])} pack trials (they run side by side):",
        "",
        "| piece | s |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in b["all_units_pieces"].items() if v >= 0.005),
        "",
    ]
    lines += _tracking_share(b, r.get("tracking_target", 0.10), r.get("timers_missing", []))
    if not b["timeline"]:
        return [
            *lines,
            "* The timers recorded no Tune trial's function: the names `bench/timers.py` "
            "wraps are out of date.",
            "",
        ]
    stage, seconds = max(b["timeline"].items(), key=lambda kv: kv[1])
    kind, kind_s = max(b["critical_categories"].items(), key=lambda kv: kv[1])
    epochs = b["all_units_pieces"].get("train: epochs", 0.0)
    lines += [
        f"* Largest stage on the critical path: {stage} ({seconds:.1f} s of "
        f"{b['fit_s']:.1f} s); inside the trial, {kind} ({kind_s:.1f} s of "
        f"{sum(b['critical_categories'].values()):.1f} s). The training epochs themselves "
        f"take {epochs:.2f} s summed over the {len(b['units'])} units.",
        "",
    ]
    return lines


def _p6(r: dict[str, Any]) -> list[str]:
    cli, timed, joined = r["cli"], r["cli_instrumented"], r.get("cli_joined", {})
    rows = [
        ("(a) `dualtune run SPEC`", cli["wall_s"]),
        ("(a) `dualtune run SPEC`, every process timing its pieces", timed["wall_s"]),
    ]
    if "wall_s" in joined:
        rows.append(
            (
                "(a) `dualtune run SPEC` joining a Ray runtime already running here "
                f"(`ray start --head`, up in {joined['head_start_s']:.1f} s, not counted; "
                "timed like the row above)",
                joined["wall_s"],
            )
        )
    rows += [
        ("(b) the trials as one pack in one process (`fit_unit`)", r["one_pack_s"]),
        ("(c) a plain for-loop of `fit` over the trials, as a script", r["loop_script_s"]),
        ("the same loop inside this process (one torch thread)", r["loop_in_process_s"]),
    ]
    p6a, p6b = r["P6a"], r["P6b"]
    lines = [
        "## P6: `dualtune run` against the same grid in one process",
        "",
        f"`{r['spec']}`: the P3 grid ({r['trials']} FL trials on sklearn digits, MLP [64], "
        f"batch 64, SGD momentum 0.9) at {r['epochs']} epochs, `pack` and `logging` at "
        f"their defaults, on {r['cpus']} CPUs (`bench/sweep_overhead.py`). (a) is "
        "`dualtune run` in a new process as a user runs it: tracking on into a fresh MLflow "
        "SQLite store (made before the clock starts, in "
        f"{cli['store_setup_s']:.1f} s), Tune's storage in a fresh `DUALTUNE_DATA_DIR`, "
        "no Ray address given (the driver starts a Ray runtime of its own). (c) is "
        "`for trial in load_spec(path).trials(): fit(trial)` in `python -c`, imports "
        "included, one torch thread as each unit has. (b) and the in-process loop run after a "
        "warm-up "
        "(data loaded, a one-epoch unit trained), with one torch thread, as a unit does.",
        "",
        "| run | wall time (s) |",
        "|---|---|",
        *(f"| {label} | {seconds:.1f} |" for label, seconds in rows),
        "",
        f"**P6a = (a) ÷ (b) = {p6a:.2f}** — {_met(p6a <= r['target_pack'], '≤ 2.0')}. "
        f"**P6b = (a) ÷ (c) = {p6b:.2f}** — {_met(p6b <= r['target_loop'], '≤ 0.5')}. "
        f"(a) ÷ the loop inside one process = {r['cli_over_loop_in_process']:.2f}.",
        "",
    ]
    if "P6a_joined" in r:
        lines += [
            f"* Joining a running Ray runtime: P6a = {r['P6a_joined']:.2f} — "
            f"{_met(r['P6a_joined'] <= r['target_pack'], '≤ 2.0')}; P6b = "
            f"{r['P6b_joined']:.2f} — {_met(r['P6b_joined'] <= r['target_loop'], '≤ 0.5')}.",
        ]
    if "note" in joined:
        lines.append(f"* The run that joins a running Ray runtime: {joined['note']}.")
    if "error" in joined:
        last = [line for line in joined["error"].splitlines() if line.strip()][-1:] or ["?"]
        lines.append(
            f"* The run that joins a running Ray runtime failed (its last line: `{last[0]}`; "
            "the whole error is in `results.json`)."
        )
    for label, run in (("(a)", cli), ("(a), timed", timed)):
        if "failed_attempt" in run:
            last = run["failed_attempt"].strip().splitlines()[-1:] or ["?"]
            lines.append(f"* {label} failed once and was run again; the first: `{last[0]}`.")
    logged = cli["logged"]
    lines += [
        f"* The store after (a): {logged['runs']} MLflow runs, {logged['runs_with_metrics']} "
        "with metrics.",
        "",
        "![P6 wall times and the breakdown of `dualtune run`](benchmarks/p6.png)",
        "",
    ]
    return lines + _p6_breakdown(timed, joined)


def _columns(columns: dict[str, dict[str, float]], first: str = "stage") -> list[str]:
    """A table of seconds: one row per key (in first-seen order), one column per run."""
    names = list(columns)
    keys = list(dict.fromkeys(k for c in columns.values() for k in c))
    return [
        "| " + " | ".join([first, *(f"{n} (s)" for n in names)]) + " |",
        "|" + "---|" * (len(names) + 1),
        *(
            "| " + " | ".join([k, *(f"{columns[n].get(k, 0.0):.2f}" for n in names)]) + " |"
            for k in keys
        ),
    ]


def _p6_breakdown(timed: dict[str, Any], joined: dict[str, Any]) -> list[str]:
    heading = ["### Where `dualtune run`'s time goes", ""]
    found = {
        "own Ray runtime": timed.get("breakdown", {}),
        "joining a running one": joined.get("breakdown", {}),
    }
    runs = {n: b for n, b in found.items() if "timeline" in b}
    if not runs:
        error = timed.get("breakdown", {}).get("error", "no timings")
        return [*heading, f"Not measured: {error}.", ""]
    own = runs.get("own Ray runtime", next(iter(runs.values())))
    imports = ", ".join(f"{k} {v:.1f} s" for k, v in own["driver_imports"].items())
    lines = [
        *heading,
        "The timed runs of (a): a `sitecustomize` (`bench/process_timers.py`) in every "
        "process the run starts (the CLI, the driver it execs into, Ray's workers) records its "
        "start and exit, the driver's pieces, and the workers' pieces as in P3. Wall time "
        + ", ".join(f"{b['wall_s']:.1f} s ({n})" for n, b in runs.items())
        + ".",
        "",
        *_columns({n: b["timeline"] for n, b in runs.items()}),
        "",
        f"The driver's first imports before `run_sweep`, each without the others: {imports}.",
        "",
        "Inside `run_sweep`:",
        "",
        *_columns({n: b["run_sweep"] for n, b in runs.items()}, "piece"),
        "",
    ]
    tunes = {n: b["tune"] for n, b in runs.items() if b["tune"].get("timeline")}
    if tunes:
        lines += [
            "Inside `Tuner.fit`, the unit that finished last (the critical path), from "
            "`Tuner.fit`'s start:",
            "",
            *_columns({n: t["timeline"] for n, t in tunes.items()}),
            "",
            "Inside that unit, by kind:",
            "",
            *_columns({n: t["critical_categories"] for n, t in tunes.items()}, "kind"),
            "",
        ]
    for n, t in tunes.items():
        if t.get("tracking_share") is not None:
            lines.append(
                f"* Tracking, {n}: {100 * t['tracking_share']:.1f} % of that unit's wall "
                f"time ({t['tracking_s']:.2f} s of {t['trial_s']:.2f} s)."
            )
    lines += [
        f"* `ray.init`, {n}: {', '.join(b['ray_init']) or 'not called'}." for n, b in runs.items()
    ]
    missing = sorted(set(timed.get("timers_missing", [])) | set(joined.get("timers_missing", [])))
    if missing:
        lines.append(
            "* Not timed (wrapped by `bench/timers.py`, gone from the code): "
            + ", ".join(f"`{m}`" for m in missing)
            + "."
        )
    return [*lines, ""]


def _tracking_share(b: dict[str, Any], target: float, missing: list[str]) -> list[str]:
    """The line on tracking's share of the critical trial's wall time."""
    if "tracking_share" not in b:  # results of a run from before it was computed
        return []
    share = b["tracking_share"]
    lines = []
    if share is None:
        lines.append(
            "* Tracking's share of the packed trial's wall time: **not measured** — the "
            "timers recorded no MLflow logger call in that trial (the names `bench/timers.py` "
            "wraps are out of date)."
        )
    else:
        lines.append(
            f"* **Tracking = {100 * share:.1f} % of the packed trial's wall time** "
            f"({b['tracking_s']:.2f} s of {b['trial_s']:.2f} s in the trial that finished "
            f"last: the MLflow logger's calls on its thread, their imports apart) — "
            f"{_met(share <= target, f'≤ {100 * target:.0f} %')}."
        )
    if missing:
        lines.append(
            "* Not timed (wrapped by `bench/timers.py`, gone from the code): "
            + ", ".join(f"`{m}`" for m in missing)
            + "."
        )
    return lines


def _scaling(k: dict[str, Any], n: dict[str, Any]) -> list[str]:
    lines = [
        "## Scaling: pack size and data size",
        "",
        f"One training epoch (`PackTrainer.train_epoch`; median of {k['epochs']} after a "
        f"warm-up epoch) of a pack of K FL trials on {k['task']} (n = {k['n']:,}), against the "
        f"unpacked `Trainer`'s epoch ({1e3 * k['unpacked_epoch_s']:.1f} ms) × K.",
        "",
        "| K | pack epoch (ms) | per trial (ms) | K × unpacked (ms) | speed-up | members left |",
        "|---|---|---|---|---|---|",
    ]
    for row in k["rows"]:
        lines.append(
            f"| {row['k']} | {1e3 * row['pack_epoch_s']:.1f} | {1e3 * row['per_member_s']:.2f} "
            f"| {1e3 * row['unpacked_times_k_s']:.1f} | {row['speedup']:.2f}× | "
            f"{row['members_left']} |"
        )
    one = k["rows"][0]
    best = max(k["rows"], key=lambda r: r["speedup"])
    lines += [
        "",
        f"A pack of one is {one['pack_epoch_s'] / k['unpacked_epoch_s']:.1f}× slower than "
        "the unpacked trainer (the vmapped step's fixed cost), which is why a unit of one "
        f"trial runs unpacked; the largest speed-up is {best['speedup']:.1f}× at "
        f"K = {best['k']}.",
        "",
        f"Against n, on {n['task']}: one epoch (median of 3 after a warm-up for n ≤ 100k; a "
        f"single epoch at 1M) unpacked and as a pack of K = {n['k']}.",
        "",
        "| n | unpacked epoch (s) | pack epoch (s) | per trial (s) | speed-up "
        "| unpacked µs/sample | pack µs/sample/trial | members left |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in n["rows"]:
        lines.append(
            f"| {row['n']:,} | {row['unpacked_epoch_s']:.3f} | {row['pack_epoch_s']:.3f} | "
            f"{row['per_member_s']:.3f} | {row['speedup']:.2f}× | "
            f"{row['unpacked_us_per_sample']:.2f} | {row['pack_us_per_sample_member']:.2f} | "
            f"{row['members_left']} |"
        )
    lines += ["", "![Scaling with K and n](benchmarks/scaling.png)", ""]
    return lines


def _memory(m: dict[str, Any]) -> list[str]:
    lines = [
        "## Memory per member",
        "",
        "Bytes one member adds to a pack: `member_bytes` (the estimate behind `pack: auto`: "
        "parameters, gradients, optimizer state, multipliers and one batch's activations), "
        "the pack's own tensors per member (parameters, gradients, SGD momentum, the "
        "multiplier table; slope over K), and the growth of the process's peak RSS over one "
        "training epoch (the peak reset through `/proc/self/clear_refs` before each pack; "
        "least-squares slope over K). Data is loaded before the baseline: a pack holds it once.",
        "",
        "| problem | K | estimate (MB/member) | tensors (MB/member) | peak RSS (MB/member) "
        "| estimate ÷ RSS |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for p in m["problems"]:
        ks = ", ".join(str(r["k"]) for r in p["rows"])
        rss = p["peak_rss_per_member"]
        est = p["member_bytes_estimate"]
        lines.append(
            f"| {p['problem']} | {ks} | {est / 1e6:.2f} | "
            f"{p['tensor_bytes_per_member'] / 1e6:.2f} | "
            + (f"{rss / 1e6:.2f} | {est / rss:.2f} |" if rss else "n/a | n/a |")
        )
        if any(r["members_left"] != r["k"] for r in p["rows"]):
            notes.append(f"* {p['problem']}: some members diverged; its slopes are unreliable.")
    lines += ["", *notes, "![Memory against K](benchmarks/memory.png)", ""]
    return lines


def _p5(r: dict[str, Any]) -> list[str]:
    pieces = {
        "per-sample arrays (tensor → numpy)": r["per_sample_arrays_s"],
        "pandas frames (both splits)": r["frames_s"],
        "parquet writes (both splits, frames included)": r["parquet_s"],
        "artifact upload to the MLflow run": r["upload_s"],
    }
    lines = [
        "## P5: per-sample logging at n = 1,000,000",
        "",
        f"One trial on {r['task']}, n = {r['n']:,} training samples (1,000 val): one training "
        "epoch against one per-sample logging event (`TrialRunLogger.log_per_sample`: a "
        "parquet file per split written on a background thread, "
        f"{r['parquet_bytes'] / 1e6:.1f} MB together, uploaded to the run's artifacts; "
        "SQLite store, local artifacts; median of 3) (`bench/per_sample_logging.py`).",
        "",
        "| piece | s |",
        "|---|---|",
        f"| one training epoch | {r['epoch_s']:.3f} |",
        f"| the evaluation at that epoch (runs whether or not it logs tables) | "
        f"{r['evaluate_s']:.3f} |",
        f"| `log_per_sample` (one event), on the training thread | {r['log_per_sample_s']:.3f} |",
        *(f"| … {k} | {v:.3f} |" for k, v in pieces.items()),
        f"| an epoch without a logging event (median of interleaved rounds) | "
        f"{r['epoch_alone_s']:.3f} |",
        f"| an epoch started right after a logging event (writes overlap it) | "
        f"{r['epoch_after_log_s']:.3f} |",
        f"| **cost of one event to training** (the difference, at least the call) | "
        f"{r['cost_s']:.3f} |",
        f"| one epoch of a pack of {r['k']} | {r['pack_epoch_s']:.3f} |",
        "",
        f"**P5 = one logging event's cost ÷ one epoch = {100 * r['ratio']:.1f} %** — "
        f"{_met(r['ratio'] <= r['target'], '≤ 2 %')}"
        + (f" (by {r['ratio'] / r['target']:.1f}×)." if r["ratio"] > r["target"] else ".")
        + f" In a pack of {r['k']}, {r['k']} tables after one shared epoch: "
        f"{100 * r['pack_ratio']:.1f} %. The worker logs the tables at the evaluations of every "
        "`logging.per_sample_every`-th epoch (default 5) and at the last, so per epoch the "
        "cost is that share or less.",
        "",
    ]
    biggest = max(pieces.items(), key=lambda kv: kv[1])
    lines += [
        f"* The largest piece of a logging event: {biggest[0]} ({biggest[1]:.3f} s), done "
        "off the training thread; pyarrow encodes without the GIL, so on a second core it "
        "overlaps training. The pack's figure is an estimate: K × one event's cost over "
        "the pack's epoch.",
        "",
    ]
    return lines


def _existing_p4() -> str:
    """The P4 section of the current document (kept when P4 is not re-run)."""
    if not OUT.exists():
        return ""
    text = OUT.read_text()
    at = text.find(P4_HEADING)
    return text[at:].rstrip() + "\n" if at >= 0 else ""


def _gpu_note(meta: dict[str, Any]) -> list[str]:
    return [] if meta.get("gpu") else [f"* GPU: {NO_GPU}.", ""]


def _kept_note(meta: dict[str, Any]) -> list[str]:
    kept = meta.get("kept") or {}
    if not kept:
        return []
    parts = "; ".join(f"{part} from the run of {when}" for part, when in sorted(kept.items()))
    return [f"Not re-run in this run, kept from an earlier one: {parts}.", ""]


def render(results: dict[str, Any], p4_text: str) -> str:
    meta = results["meta"]
    text = [
        "# Benchmarks",
        "",
        f"Machine: {meta['machine']}. Run {meta['started']}–{meta['finished']} with "
        f"`{meta['command']}`; the P4 section says when it ran. Ratios are taken within one "
        "run; other work shared this machine's cores, so absolute times vary between runs. "
        "Raw numbers: `docs/benchmarks/results.json`.",
        "",
        *_kept_note(meta),
    ]
    if "p6" in results:
        text += _p6(results["p6"])
    if "p3" in results:
        text += _p3(results["p3"]) + _gpu_note(meta)
    if "p1p2" in results:
        text += _p1p2(results["p1p2"]) + _gpu_note(meta)
    if "scaling_k" in results:
        text += _scaling(results["scaling_k"], results["scaling_n"])
    if "memory" in results:
        text += _memory(results["memory"])
    if "p5" in results:
        text += _p5(results["p5"])
    if "fairness" in results:
        text += fairness.render(results["fairness"])
    if "early_stopping" in results:
        text += early_stopping.render(results["early_stopping"])
    return "\n".join(text) + "\n" + p4_text


def _parts(parser: argparse.ArgumentParser, spec: str) -> set[str]:
    names = {ALIASES.get(s.strip(), s.strip()) for s in spec.split(",") if s.strip()}
    if names - set(PARTS):
        parser.error(f"unknown parts {sorted(names - set(PARTS))}; parts: {', '.join(PARTS)}")
    return names


def _previous() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def _keep(results: dict[str, Any], previous: dict[str, Any], run: set[str]) -> dict[str, str]:
    """Copy the parts not run from ``previous`` into ``results``; returns part → the run
    they come from."""
    meta = previous.get("meta", {})
    kept: dict[str, str] = {}
    for part, keys in RESULT_KEYS.items():
        if part in run or not all(k in previous for k in keys):
            continue
        for k in keys:
            results[k] = previous[k]
        kept[part] = (meta.get("kept") or {}).get(part) or meta.get("started", "unknown")
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument("--only", default="", help=f"comma-separated parts of {PARTS} to run")
    choose.add_argument("--skip", default="", help=f"comma-separated parts of {PARTS} to skip")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    run = _parts(parser, args.only) if args.only else set(PARTS) - _parts(parser, args.skip)
    if args.render_only:
        saved: dict[str, Any] = json.loads(RESULTS.read_text())
        OUT.write_text(render(saved, _existing_p4()))
        figures.draw(saved, FIGURES)
        fairness.draw(saved, FIGURES)
        print(f"wrote {OUT}")
        return
    import torch

    from bench import packing, per_sample_logging, service_load, step_overhead, sweep_overhead

    p4_text = _existing_p4()
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {}
    if "p1p2" in run:
        # The training thread's CPU time: on this shared 2-core machine wall time swung
        # ±10 % between rounds (the process descheduled), the thread's work did not.
        results["p1p2"] = step_overhead.main(["--clock", "thread"])
    if "scaling" in run:
        results["scaling_k"] = packing.scaling_k()
        results["scaling_n"] = packing.scaling_n()
    if "memory" in run:
        results["memory"] = packing.memory()
    if "p5" in run:
        results["p5"] = per_sample_logging.main([])
    if "p3" in run:
        results["p3"] = packing.p3()
    if "p6" in run:
        results["p6"] = sweep_overhead.main([])
    if "fairness" in run:
        results["fairness"] = fairness.main([])
    if "early_stopping" in run:
        results["early_stopping"] = early_stopping.main([])
    if "p4" in run:
        load = service_load.main([])
        p4_text = "\n".join(service_load.render(load)) + "\n"
    finished = dt.datetime.now(dt.UTC)
    kept = _keep(results, _previous(), run)
    results["meta"] = {
        "machine": machine.describe(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": finished.strftime("%H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench.run_all", *(argv or sys.argv[1:])]),
        "kept": kept,
    }
    FIGURES.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    figures.draw(results, FIGURES)
    fairness.draw(results, FIGURES)
    OUT.write_text(render(results, p4_text))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
