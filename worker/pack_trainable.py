"""The Ray Tune trainable of a unit: one trial (``run_trial``) or a pack of trials.

A pack trains with ``core.engine.fit.fit_pack`` in one Ray trial, but each member stays its
own trial everywhere users look: its own MLflow child run (metrics every evaluation,
per-sample artifacts, final plots, status tag), its own state file in every checkpoint
(``members/<trial_id>.pt``, the single-trial trainer state) and its own outcome in the
reports to Tune (``dualtune/members``: status, error, final metrics, MLflow run id), from
which the driver's callback emits per-trial events. A member that diverges is finished
as ``diverged`` at once; the others go on. After a kill, Tune restarts the pack from its
last checkpoint and every member resumes from its own state.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from ray import tune

from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.fit import fit_pack
from dualtune.core.engine.pack_trainer import PACK_STATE_VERSION
from dualtune.core.engine.result import PackEvalReport
from dualtune.core.spec import TrialConfig
from dualtune.core.states import TrialState
from dualtune.worker.trainable import (
    ERROR_KEY,
    LOGGING_KEY,
    RUN_ID_KEY,
    STATUS_KEY,
    Registrations,
    TrackingSettings,
    measured_epsilon,
    run_trial,
    set_torch_threads,
    trial_logger,
)

MEMBERS_KEY = "dualtune/members"
MEMBER_DIR = "members"
PACK_FILE = "pack.json"


def member_outcomes(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The members' outcomes a pack reported (``{}`` for an unpacked trial)."""
    raw = result.get(MEMBERS_KEY)
    return dict(json.loads(raw)) if isinstance(raw, str) and raw else {}


def _save_pack(directory: Path, state: dict[str, Any]) -> None:
    members = directory / MEMBER_DIR
    members.mkdir()
    for trial_id, member in state["members"].items():
        torch.save(member, members / f"{trial_id}.pt")
    (directory / PACK_FILE).write_text(
        json.dumps({"version": state["version"], "diverged": state["diverged"]})
    )


def _load_pack(checkpoint: tune.Checkpoint, trial_ids: Sequence[str]) -> dict[str, Any]:
    """The pack state of ``trial_ids`` from a checkpoint (members finished since are
    left out)."""
    with checkpoint.as_directory() as directory:
        meta = json.loads((Path(directory) / PACK_FILE).read_text())
        members = {
            path.stem: torch.load(path, weights_only=False)
            for path in sorted((Path(directory) / MEMBER_DIR).glob("*.pt"))
        }
    wanted = set(trial_ids)
    return {
        "version": meta["version"],
        "members": {k: v for k, v in members.items() if k in wanted},
        "diverged": {k: tuple(v) for k, v in meta["diverged"].items() if k in wanted},
    }


def _report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        _save_pack(Path(directory), state)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def run_pack(trials: Sequence[TrialConfig], tracking: TrackingSettings) -> None:
    """Train ``trials`` as one pack inside the current Tune trial."""
    set_torch_threads()
    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    loggers = {t.trial_id: trial_logger(t, tracking, client) for t in trials}
    outcomes: dict[str, dict[str, Any]] = {}
    for trial_id, logger in loggers.items():
        done = logger.completed()
        if done is not None:  # finished before a restart that Tune had not recorded
            outcomes[trial_id] = {
                "status": done.status,
                "error": done.error,
                "metrics": done.metrics,
                "run_id": logger.run_id,
                "logging": "",
            }
    todo = [t for t in trials if t.trial_id not in outcomes]
    epsilon = {t.trial_id: measured_epsilon(t) for t in todo}
    every = trials[0].logging.per_sample_every

    def finish(
        trial_id: str, status: TrialState, metrics: dict[str, float], error: str | None
    ) -> None:
        logger = loggers[trial_id]
        logger.set_status_tag(status, error)
        summary = logger.finish("FINISHED" if status == TrialState.SUCCEEDED else "FAILED")
        outcomes[trial_id] = {
            "status": status,
            "error": error,
            "metrics": metrics,
            "run_id": logger.run_id,
            "logging": summary.message,
        }

    def diverged(found: dict[str, Diverged]) -> None:
        for trial_id, exc in found.items():
            if trial_id not in outcomes:
                finish(trial_id, TrialState.DIVERGED, {"epoch": float(exc.epoch)}, str(exc))

    final_state: dict[str, Any] = {}

    def reporter(report: PackEvalReport) -> None:
        diverged(report.diverged)
        for trial_id, metrics in report.metrics.items():
            loggers[trial_id].log_metrics(report.epoch, metrics)
            if report.is_last or report.epoch % every == 0:
                loggers[trial_id].log_per_sample(
                    report.epoch, report.per_sample(trial_id), epsilon=epsilon[trial_id]
                )
        state = report.state_dict()
        if report.is_last:
            final_state.update(state)  # reported once more below, with the outcomes
        else:
            _report(
                {
                    STATUS_KEY: TrialState.RUNNING.value,
                    MEMBERS_KEY: json.dumps(outcomes),
                    "epoch": report.epoch,
                },
                state,
            )

    if todo:
        for t in todo:
            loggers[t.trial_id].start()
        checkpoint = tune.get_checkpoint()
        ids = [t.trial_id for t in todo]
        resume = _load_pack(checkpoint, ids) if checkpoint is not None else None
        result = fit_pack(todo, reporter=reporter, resume=resume)
        diverged(result.diverged)
        for trial_id, trial_result in result.results.items():
            loggers[trial_id].log_final(
                trial_result.per_sample,
                epsilon=epsilon[trial_id],
                multipliers=trial_result.multipliers,
            )
            finish(trial_id, TrialState.SUCCEEDED, trial_result.final, None)
    summary = {STATUS_KEY: "done", MEMBERS_KEY: json.dumps(outcomes)}
    _report(summary, final_state or {"version": PACK_STATE_VERSION, "members": {}, "diverged": {}})


def run_unit(
    config: dict[str, Any],
    *,
    trials: dict[str, dict[str, Any]],
    units: dict[str, list[str]],
    tracking: TrackingSettings,
    registrations: Registrations | None = None,
) -> None:
    """Tune entry point: ``config["trial_id"]`` names a unit, a trial or a pack. The
    driver's in-process ``registrations`` are registered here first: the trials' configs
    name them."""
    if registrations is not None:
        registrations.apply()
    members = units.get(config["trial_id"], [config["trial_id"]])
    if len(members) == 1:
        run_trial({"trial_id": members[0]}, trials=trials, tracking=tracking)
        return
    run_pack([TrialConfig.model_validate(trials[m]) for m in members], tracking)


__all__ = ["ERROR_KEY", "LOGGING_KEY", "MEMBERS_KEY", "RUN_ID_KEY", "run_pack", "run_unit"]
