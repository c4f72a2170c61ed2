"""Write ``docs/results.md`` and its figures from the result records of ``runner``.

Every number and verdict in the report is computed here from the records; nothing is typed
in by hand, so regenerating the runs regenerates the conclusions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import SweepSpec
from reproduce.experiments import (
    ACCURACY_MARGIN_POINTS,
    MEAN_LOSS_MARGIN,
    SECTIONS,
    Section,
)

Record = dict[str, Any]
Trial = dict[str, Any]

METHOD_ORDER = ("erm", "penalty", "cserm", "fl", "rfl", "alm", "sal")


def _value(trial: Trial, column: str) -> float:
    """A metric of the trial, or a derived column (``slack_*`` = multiplier / α)."""
    metrics: Mapping[str, float] = trial["metrics"]
    if column.startswith("slack_"):
        alpha = trial["params"].get("alpha")
        lam = metrics.get("dual/lambda_" + column.removeprefix("slack_"))
        if alpha is None or lam is None:
            return math.nan
        return float(lam) / float(alpha)
    value = metrics.get(column)
    return math.nan if value is None else float(value)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "–"
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _params(trial: Trial, *, seed: bool = False) -> str:
    shown = {k: v for k, v in trial["params"].items() if seed or k != "seed"}
    return ", ".join(f"{k}={v:g}" for k, v in shown.items()) or "–"


def _sorted(trials: Sequence[Trial]) -> list[Trial]:
    def key(t: Trial) -> tuple[int, tuple[float, ...]]:
        order = METHOD_ORDER.index(t["method"]) if t["method"] in METHOD_ORDER else 99
        return order, tuple(float(v) for _, v in sorted(t["params"].items()))

    return sorted(trials, key=key)


def _headers(columns: Sequence[str]) -> list[str]:
    """Column names without the split when every column is of one split (the caption says
    which), else with it."""
    prefixes = {c.split("/", 1)[0] for c in columns}
    one_split = len(prefixes) == 1 and prefixes <= {"train", "val"}
    return [c.split("/", 1)[1] if one_split else c.replace("constraint/", "") for c in columns]


def table(trials: Sequence[Trial], columns: Sequence[str]) -> list[str]:
    seeds = len({t["params"].get("seed") for t in trials}) > 1
    lines = [
        "| method | params | status | " + " | ".join(_headers(columns)) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for t in _sorted(trials):
        cells = [_fmt(_value(t, c)) for c in columns]
        head = f"| {t['method']} | {_params(t, seed=seeds)} | {t['status']} | "
        lines.append(head + " | ".join(cells) + " |")
    return lines


def best_per_method(record: Record) -> dict[str, Trial]:
    """The best trial of each method by the spec's own ``selection`` (feasible first), as
    the service's report picks it."""
    spec = SweepSpec.model_validate(record["spec"])
    outcomes = [
        TrialOutcome(t["trial_id"], t["method"], t["params"], t["status"], t["metrics"])
        for t in record["trials"]
    ]
    report = build_report(spec, outcomes, sweep_id=record["sweep_id"])
    by_id = {t["trial_id"]: t for t in record["trials"]}
    best: dict[str, Trial] = {}
    for entry in report["methods"]:
        chosen = entry["best"] or entry["best_infeasible"]
        if chosen is not None:
            best[entry["method"]] = by_id[chosen["trial_id"]]
    return best


def _budget(record: Record) -> str:
    spec = record["spec"]
    train = spec["train"]
    params = ", ".join(f"{k}={v}" for k, v in spec["task"]["params"].items() if v is not None)
    seeds = spec["grid"].get("seed") or [0]
    return (
        f"task `{spec['task']['name']}` ({params}); {train['epochs']} epochs, batch "
        f"{train['batch_size']}, {train['optimizer']['name']} lr {train['optimizer']['lr']}; "
        f"seeds {list(seeds)}; {len(record['trials'])} trials in {record['wall_s'] / 60:.1f} min"
    )


# -- verdicts: each returns sentences computed from the records


def _rel(a: float, b: float) -> float:
    return a / b - 1.0 if b else math.nan


HELD_OUT_TAIL = (
    ("val/cvar_0.01", "CVaR₀.₀₁"),
    ("val/cvar_0.05", "CVaR₀.₀₅"),
    ("val/cvar_0.1", "CVaR₀.₁"),
    ("val/loss_max", "max loss"),
)


def feasible_learning_claim(t: Trial, erm: Trial) -> list[str]:
    """What keeps the Feasible Learning claim from holding for ``t`` against ``erm``, on the
    held-out (val) split: empty when it holds. The train split plays no part."""
    failed = []
    for column, label in HELD_OUT_TAIL:
        if not _value(t, column) < _value(erm, column):
            failed.append(f"val {label} not below ERM's")
    accuracy = _value(t, "val/accuracy"), _value(erm, "val/accuracy")
    if not math.isnan(accuracy[1]):
        drop = 100 * (accuracy[1] - accuracy[0])
        if not drop <= ACCURACY_MARGIN_POINTS:
            failed.append(
                f"val accuracy {drop:.2f} points below ERM's (margin {ACCURACY_MARGIN_POINTS:g})"
            )
    else:
        rise = _rel(_value(t, "val/loss_mean"), _value(erm, "val/loss_mean"))
        if not rise <= MEAN_LOSS_MARGIN:
            failed.append(
                f"val mean loss {100 * rise:+.1f} % against ERM's (margin "
                f"+{100 * MEAN_LOSS_MARGIN:g} %)"
            )
    return failed


def _versus(t: Trial, erm: Trial, column: str, label: str) -> str:
    a, b = _value(t, column), _value(erm, column)
    return f"{label} {_fmt(a)} vs {_fmt(b)} ({100 * _rel(a, b):+.1f} %)"


def verdict_feasible_learning(records: Sequence[Record]) -> list[str]:
    out = []
    for record in records:
        best = best_per_method(record)
        erm = best.get("erm")
        if erm is None:
            out.append(f"* `{record['name']}`: no ERM trial finished; no comparison.")
            continue
        classification = not math.isnan(_value(erm, "val/accuracy"))
        for method in ("fl", "rfl", "cserm"):
            t = best.get(method)
            if t is None:
                continue
            held_out = [_versus(t, erm, c, label) for c, label in HELD_OUT_TAIL]
            if classification:
                diff = 100 * (_value(t, "val/accuracy") - _value(erm, "val/accuracy"))
                held_out.append(f"accuracy {diff:+.2f} points")
            else:
                held_out.append(_versus(t, erm, "val/loss_mean", "mean loss"))
            train = [
                _versus(t, erm, "train/cvar_0.1", "CVaR₀.₁"),
                _versus(t, erm, "train/loss_max", "max loss"),
                _versus(t, erm, "train/loss_mean", "mean loss"),
            ]
            failed = feasible_learning_claim(t, erm)
            tag = "; a baseline, not part of the claim" if method == "cserm" else ""
            verdict = "does not hold" if failed else "holds"
            out.append(
                f"* `{record['name']}` {method} ({_params(t)}{tag}) vs ERM — held out (val): "
                f"{', '.join(held_out)}; train, not the claim: {', '.join(train)} — claim "
                f"**{verdict}**{': ' + '; '.join(failed) if failed else ''}."
            )
        constrained = [
            t
            for t in _sorted(record["trials"])
            if t["method"] in ("fl", "rfl") and t["status"] == "succeeded"
        ]
        if constrained:
            meeting = [t for t in constrained if not feasible_learning_claim(t, erm)]
            names = "; ".join(f"{t['method']} ({_params(t)})" for t in meeting)
            out.append(
                f"* `{record['name']}`, every FL and RFL trial, whatever the selection: "
                f"{len(meeting)} of {len(constrained)} meet the held-out claim"
                f"{' — ' + names if names else ''}."
            )
    return out


def verdict_demographic_parity(records: Sequence[Record]) -> list[str]:
    out = []
    for record in records:
        trials = [t for t in record["trials"] if t["status"] == "succeeded"]
        erm = next((t for t in trials if t["method"] == "erm"), None)
        if erm is None:
            continue
        for t in _sorted(trials):
            if t["method"] not in ("fl", "alm"):
                continue
            gap, acc = _value(t, "train/dp_gap"), _value(t, "val/accuracy")
            diff = 100 * (acc - _value(erm, "val/accuracy"))
            holds = gap <= 0.01 and diff >= -3.0
            out.append(
                f"* `{record['name']}` {t['method']} ({_params(t)}): train dp_gap {_fmt(gap)} "
                f"(ERM {_fmt(_value(erm, 'train/dp_gap'))}), val accuracy {diff:+.2f} points "
                f"from ERM — claim (dp_gap ≤ 0.01, accuracy within 3 points) "
                f"**{'holds' if holds else 'does not hold'}**."
            )
    return out


def verdict_sal(records: Sequence[Record]) -> list[str]:
    out = []
    for record in records:
        trials = [t for t in record["trials"] if t["status"] == "succeeded"]
        sals = [t for t in trials if t["method"] == "sal"]
        for penalty in _sorted([t for t in trials if t["method"] == "penalty"]):
            for sal in sals:
                v_sal, v_pen = (_value(x, "constraint/violation_max") for x in (sal, penalty))
                a_sal, a_pen = (_value(x, "val/accuracy") for x in (sal, penalty))
                holds = v_sal < v_pen and a_sal >= a_pen - 0.005
                out.append(
                    f"* `{record['name']}` sal ({_params(sal)}) vs penalty ({_params(penalty)}):"
                    f" max violation {_fmt(v_sal)} vs {_fmt(v_pen)}, val accuracy "
                    f"{100 * a_sal:.2f} % vs {100 * a_pen:.2f} % — claim (lower violation at "
                    f"no lower accuracy, 0.5-point tolerance) "
                    f"**{'holds' if holds else 'does not hold'}**."
                )
    return out


def verdict_convection(records: Sequence[Record]) -> list[str]:
    """Constrained methods against the penalty PINN, seed by seed (they may sit in different
    specs: the penalty's constraint weights differ)."""
    trials = [t for r in records for t in r["trials"] if t["status"] == "succeeded"]
    penalty = {t["params"].get("seed"): t for t in trials if t["method"] == "penalty"}
    out = []
    for method in ("fl", "alm", "sal", "rfl"):
        mine = {t["params"].get("seed"): t for t in trials if t["method"] == method}
        seeds = sorted(set(mine) & set(penalty))
        if not seeds:
            continue
        ours = [_value(mine[s], "val/rel_l2") for s in seeds]
        theirs = [_value(penalty[s], "val/rel_l2") for s in seeds]
        wins = sum(a < b for a, b in zip(ours, theirs, strict=True))
        pairs = ", ".join(
            f"seed {s}: {_fmt(a)} vs {_fmt(b)}"
            for s, a, b in zip(seeds, ours, theirs, strict=True)
        )
        out.append(
            f"* {method} against the weighted-penalty PINN, val relative L2 ({pairs}): "
            f"lower in {wins} of {len(seeds)} seeds — claim "
            f"**{'holds' if wins == len(seeds) else 'does not hold'}** at this budget."
        )
    return out


def _seed_mean(trials: Sequence[Trial], column: str) -> float:
    values = [_value(t, column) for t in trials]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def verdict_layer_descent(records: Sequence[Record]) -> list[str]:
    out = []
    for record in records:
        trials = [t for t in record["trials"] if t["status"] == "succeeded"]
        groups: dict[str, list[Trial]] = {}
        for t in trials:
            groups.setdefault(f"{t['method']} ({_params(t)})", []).append(t)
        erm = next((g for k, g in groups.items() if k.startswith("erm ")), None)
        if erm is None:
            continue
        d0 = _seed_mean(erm, "val/descent_frac")
        n0 = _seed_mean(erm, "val/noisy_accuracy")
        for name, group in groups.items():
            if group is erm:
                continue
            d = _seed_mean(group, "val/descent_frac")
            n = _seed_mean(group, "val/noisy_accuracy")
            out.append(
                f"* {name}, mean over {len(group)} seeds: val descent share {_fmt(d)} vs ERM "
                f"{_fmt(d0)} ({'higher' if d > d0 else 'not higher'}; "
                f"{'below' if d < 1 else 'at'} 100 %), noisy-input accuracy {_fmt(n)} vs "
                f"{_fmt(n0)} ({'≥ ERM' if n >= n0 else 'below ERM'})."
            )
    return out


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


def verdict_rfl_alpha(records: Sequence[Record]) -> list[str]:
    out = []
    for record in records:
        trials = _sorted([t for t in record["trials"] if t["status"] == "succeeded"])
        rfl = [t for t in trials if t["method"] == "rfl"]
        alphas = [float(t["params"]["alpha"]) for t in rfl]
        if len(rfl) < 2:
            continue
        for column, reading in (
            ("slack_mean", "the claim"),
            ("val/cvar_0.1", "the held-out tail"),
            ("train/cvar_0.1", "the train tail, not the claim"),
        ):
            rho = _spearman(alphas, [_value(t, column) for t in rfl])
            out.append(
                f"* Spearman rank correlation of α with {column} ({reading}): {rho:+.2f} "
                f"({len(rfl)} values of α)."
            )
        erm = next((t for t in trials if t["method"] == "erm"), None)
        if erm is None:
            continue
        for column, label in (("val/cvar_0.1", "val CVaR₀.₁"), ("val/loss_max", "val max loss")):
            below = [
                a
                for a, t in zip(alphas, rfl, strict=True)
                if _value(t, column) < _value(erm, column)
            ]
            shown = ", ".join(f"{a:g}" for a in below) or "none"
            out.append(
                f"* {label} below ERM's ({_fmt(_value(erm, column))}) at {len(below)} of "
                f"{len(rfl)} values of α (α = {shown})."
            )
    return out


VERDICTS: dict[str, Callable[[Sequence[Record]], list[str]]] = {
    "feasible_learning": verdict_feasible_learning,
    "demographic_parity": verdict_demographic_parity,
    "sal": verdict_sal,
    "convection": verdict_convection,
    "layer_descent": verdict_layer_descent,
    "rfl_alpha": verdict_rfl_alpha,
}


# -- figures


def loss_tails(record: Record, split: str) -> list[tuple[str, list[float], list[float]]]:
    """``(label, ℓ, share of the split's samples with loss > ℓ)`` per method's best trial,
    from the quantiles of its last per-sample ``split`` losses (``runner.loss_quantiles``);
    methods whose trial has none are left out."""
    curves = []
    best = best_per_method(record)
    for method, t in sorted(best.items(), key=lambda kv: METHOD_ORDER.index(kv[0])):
        q = t.get(f"{split}_loss_quantiles")
        if not q:
            continue
        levels = t.get("loss_levels") or t.get(f"{split}_loss_levels")
        levels = levels or list(np.linspace(0.0, 1.0, len(q)))
        keep = [(v, 1.0 - lv) for v, lv in zip(q, levels, strict=True) if lv < 1.0 and v > 0]
        if keep:
            xs, ys = zip(*keep, strict=True)
            curves.append((f"{method} ({_params(t)})", list(xs), list(ys)))
    return curves


def figure_loss_cdf(record: Record, path: Path) -> bool:
    panels = {"val": "held-out (val)", "train": "train"}
    tails = {split: loss_tails(record, split) for split in panels}
    if not any(tails.values()):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (split, name) in zip(axes, panels.items(), strict=True):
        # The survival curve on log-log axes: the tail, which is what the methods differ in,
        # fills the right half instead of collapsing into the top of a CDF.
        for label, xs, ys in tails[split]:
            ax.step(xs, ys, where="post", label=label)
        if not tails[split]:
            ax.text(0.5, 0.5, f"no per-sample {split} losses", ha="center", transform=ax.transAxes)
        else:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel(f"per-sample {split} loss ℓ")
        ax.set_title(f"{name} loss tail")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the split's samples with loss > ℓ")
    fig.suptitle(f"{record['name']}: best trial per method, last epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_dp_tradeoff(record: Record, path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(6, 4))
    trials = [t for t in record["trials"] if t["status"] == "succeeded"]
    for method in METHOD_ORDER:
        pts = [t for t in trials if t["method"] == method]
        if pts:
            ax.scatter(
                [_value(t, "train/dp_gap") for t in pts],
                [100 * _value(t, "val/accuracy") for t in pts],
                label=method,
            )
    ax.set_xlabel("train dp_gap (max − min group positive rate)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title(f"{record['name']}: disparity against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return bool(trials)


def figure_alpha_ablation(record: Record, path: Path) -> bool:
    rfl = sorted(
        (t for t in record["trials"] if t["method"] == "rfl" and t["status"] == "succeeded"),
        key=lambda t: float(t["params"]["alpha"]),
    )
    if not rfl:
        return False
    alphas = [float(t["params"]["alpha"]) for t in rfl]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    erm = [t for t in record["trials"] if t["method"] == "erm" and t["status"] == "succeeded"]
    for split, colour, style in (("val", "C0", "o-"), ("train", "C1", "s--")):
        column = f"{split}/cvar_0.1"
        ax.plot(
            alphas, [_value(t, column) for t in rfl], style, c=colour, label=f"{split} CVaR₀.₁"
        )
        if erm:
            ax.axhline(_value(erm[0], column), ls=":", c=colour, label=f"ERM {split} CVaR₀.₁")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("slack cost α")
    ax.set_ylabel("CVaR₀.₁ of the per-sample loss")
    twin = ax.twinx()
    twin.plot(alphas, [_value(t, "slack_mean") for t in rfl], "^:", c="C3", label="mean slack")
    twin.set_yscale("log")
    twin.set_ylabel("mean slack u = λ/α")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    ax.set_title(f"{record['name']}: RFL over α (held-out val and train tails)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


FIGURES: dict[str, Callable[[Record, Path], bool]] = {
    "loss_cdf": figure_loss_cdf,
    "dp_tradeoff": figure_dp_tradeoff,
    "alpha_ablation": figure_alpha_ablation,
}


def section_markdown(
    number: int, section: Section, records: Sequence[Record], figure_dir: Path, doc: Path
) -> list[str]:
    lines = [f"## {number}. {section.title}", "", f"**Claim.** {section.claim}", ""]
    lines += [f"**Paper's budget.** {section.paper_budget}. Ours is smaller:", ""]
    for record in records:
        lines.append(f"* `{record['name']}`: {_budget(record)}.")
    lines.append("")
    missing = [s for s in section.specs if s not in {r["name"] for r in records}]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]
    for record in records:
        lines += [f"### `{record['name']}`", ""]
        for caption, columns in section.tables:
            if caption:
                lines += [f"*{caption}*", ""]
            lines += table(record["trials"], columns)
            lines.append("")
        failed = [t for t in record["trials"] if t["status"] != "succeeded"]
        for t in failed:
            lines.append(f"* {t['trial_id']} {t['status']}: {t.get('error') or ''}")
        if failed:
            lines.append("")
        if section.figure:
            path = figure_dir / f"{record['name']}_{section.figure}.png"
            if FIGURES[section.figure](record, path):
                lines += [f"![{record['name']}]({path.relative_to(doc.parent).as_posix()})", ""]
                if section.figure_caption:
                    lines += [f"*{section.figure_caption}*", ""]
    verdicts = VERDICTS[section.key](records)
    if verdicts:
        lines += ["**Measured.**", "", *verdicts, ""]
    for note in section.notes:
        lines += [note, ""]
    return lines


def write_report(records: Mapping[str, Record], doc: Path, header: Sequence[str]) -> None:
    figure_dir = doc.parent / "results"
    figure_dir.mkdir(parents=True, exist_ok=True)
    lines = list(header)
    for number, section in enumerate(SECTIONS, start=1):
        found = [records[name] for name in section.specs if name in records]
        lines += section_markdown(number, section, found, figure_dir, doc)
    doc.write_text("\n".join(lines).rstrip() + "\n")
