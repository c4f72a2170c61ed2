"""The figures of each method's best trial, drawn by the driver (``logging.plots: best``).

Under ``best`` a unit draws no figures; once the report is built, the driver draws those of
each method's best trial by selection (the report's ``best``, else ``best_infeasible``) from
the final arrays its unit kept in its last checkpoint (``worker.unit_checkpoint``), and logs
them to that trial's child run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from dualtune.core.spec import TrialConfig
from dualtune.worker.tracking.trial_figures import log_trial_figures
from dualtune.worker.tracking.trial_run import run_name
from dualtune.worker.unit_checkpoint import FinalArrays, load_final


def final_arrays(result: tune.Result | None, trial_id: str) -> FinalArrays | None:
    """A member's final arrays from its unit's last checkpoint, ``None`` when that holds
    none (a unit restored after its members had finished, or one that never finished)."""
    if result is None or result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as directory:
        return load_final(Path(directory), trial_id)


def best_trials(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each method's best trial by selection (its best infeasible one where none is
    feasible), as the report's entries."""
    found = []
    for entry in report["methods"]:
        best = entry["best"] or entry["best_infeasible"]
        if best is not None:
            found.append(best)
    return found


def log_best_figures(
    report: Mapping[str, Any],
    trials: Mapping[str, TrialConfig],
    results: Mapping[str, tune.Result],
    run_ids: Mapping[str, str],
    tracking_uri: str,
) -> list[str]:
    """Draw and log the figures of each method's best trial run here; returns what could
    not be logged, one line per trial."""
    missing: list[str] = []
    for best in best_trials(report):
        trial_id = best["trial_id"]
        trial, run_id = trials.get(trial_id), run_ids.get(trial_id)
        arrays = final_arrays(results.get(trial_id), trial_id)
        if trial is None or run_id is None or arrays is None:
            continue  # not trained by this driver, or its arrays are gone with its unit
        epsilon = float(trial.value("epsilon"))
        failed = log_trial_figures(
            tracking_uri,
            run_id,
            arrays.per_sample,
            multipliers=arrays.multipliers,
            hardest=arrays.hardest,
            epsilon=epsilon,
            title=run_name(trial.method, trial.flat_params()),
        )
        if failed:
            missing.append(f"{trial_id}: {failed}")
    return missing
