"""Submitting, reading, cancelling and retrying sweeps, and their report."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from typing import Any

from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import SpecError, SweepSpec, load_spec, trial_cap
from dualtune.service.auth import new_sweep_id
from dualtune.service.db.repository import Repository
from dualtune.service.errors import InvalidInput, NotFound
from dualtune.service.launchers.base import Launcher
from dualtune.service.records import NewTrial, Page, Sweep, Tenant, Trial

MAX_TRIALS_SETTING = "DUALTUNE_MAX_TRIALS"


def validate_spec(raw: Any, *, max_trials: int | None = None) -> SweepSpec:
    """The spec, or ``InvalidInput`` listing every field that is wrong and how to fix it.
    ``max_trials`` is the server's cap, counted (not expanded) with the rest of the checks,
    so a spec of 10**12 trials is refused as fast as any other."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            "spec: expected a JSON object (the sweep spec of ARCHITECTURE §3.1)",
            errors=[{"field": "spec", "message": "expected an object"}],
        )
    cap = trial_cap(max_trials, MAX_TRIALS_SETTING) if max_trials is not None else nullcontext()
    try:
        with cap:
            return load_spec(raw)
    except SpecError as exc:
        errors = [
            {**e, "field": "spec." + e["field"] if e["field"] else "spec"} for e in exc.errors
        ]
        raise InvalidInput(
            "invalid sweep spec: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            errors=errors,
        ) from None


def _body_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_sweep(
    repo: Repository,
    tenant: Tenant,
    raw_spec: Any,
    idempotency_key: str | None,
    *,
    max_trials: int | None = None,
) -> tuple[Sweep, bool]:
    spec = validate_spec(raw_spec, max_trials=max_trials)
    stored = spec.model_dump(mode="json")
    trials = [NewTrial(t.trial_id, t.index, t.method, dict(t.params)) for t in spec.trials()]
    return repo.create_sweep(
        tenant,
        sweep_id=new_sweep_id(),
        name=spec.name,
        spec=stored,
        trials=trials,
        idempotency_key=idempotency_key,
        body_hash=_body_hash(stored),
    )


def get_sweep(repo: Repository, tenant: Tenant, sweep_id: str) -> tuple[Sweep, Trial | None]:
    """The sweep and its best trial by the spec's selection (over all methods)."""
    sweep, succeeded = repo.sweep_and_succeeded(tenant, sweep_id)
    return sweep, best_trial(sweep, succeeded)


def best_trial(sweep: Sweep, trials: list[Trial]) -> Trial | None:
    report = _report(sweep, trials)
    selection = report["selection"]
    sign = 1.0 if selection["mode"] == "min" else -1.0
    candidates = [
        (sign * entry["best"]["metrics"].get(selection["metric"], float("inf")), entry["best"])
        for entry in report["methods"]
        if entry["best"] is not None and selection["metric"] in entry["best"]["metrics"]
    ]
    if not candidates:
        return None
    best_id = min(candidates, key=lambda c: c[0])[1]["trial_id"]
    return next(t for t in trials if t.trial_id == best_id)


def list_sweeps(
    repo: Repository, tenant: Tenant, *, status: str | None, limit: int, cursor: str | None
) -> Page[Sweep]:
    return repo.list_sweeps(tenant, status=status, limit=limit, cursor=cursor)


def list_trials(
    repo: Repository,
    tenant: Tenant,
    sweep_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Trial]:
    return repo.list_trials(tenant, sweep_id, status=status, limit=limit, cursor=cursor)


def cancel_sweep(repo: Repository, tenant: Tenant, sweep_id: str) -> Sweep:
    return repo.request_cancel(tenant, sweep_id)


def retry_sweep(repo: Repository, tenant: Tenant, sweep_id: str) -> Sweep:
    return repo.retry(tenant, sweep_id)


def _report(sweep: Sweep, trials: list[Trial]) -> dict[str, Any]:
    spec = SweepSpec.model_validate(sweep.spec)
    outcomes = [
        TrialOutcome(t.trial_id, t.method, t.params, t.status, t.metrics, t.error) for t in trials
    ]
    return build_report(spec, outcomes, sweep_id=sweep.id)


def sweep_report(repo: Repository, tenant: Tenant, sweep_id: str) -> tuple[Sweep, dict[str, Any]]:
    """Per method the best trial by the spec's selection, and the table against ERM; each
    best trial carries its MLflow run id."""
    sweep, trials = repo.all_trials(tenant, sweep_id)
    report = _report(sweep, trials)
    runs = {t.trial_id: t.mlflow_run_id for t in trials}
    for entry in report["methods"]:
        for key in ("best", "best_infeasible"):
            if entry[key] is not None:
                entry[key]["mlflow_run_id"] = runs.get(entry[key]["trial_id"])
    report["status"] = sweep.status
    report["mlflow_parent_run_id"] = sweep.mlflow_parent_run_id
    return sweep, report


def experiment_of(repo: Repository, tenant: Tenant, sweep_id: str) -> str | None:
    return repo.get_sweep(tenant, sweep_id).mlflow_experiment_id


def driver_logs(
    repo: Repository, launcher: Launcher, tenant: Tenant, sweep_id: str, tail: int
) -> str:
    """The last ``tail`` lines of the sweep's current (or last) driver's output."""
    sweep = repo.get_sweep(tenant, sweep_id)
    if not sweep.launcher_ref:
        raise NotFound(
            f"sweep {sweep_id} has no driver yet (it is {sweep.status}); logs appear once it "
            "is launched"
        )
    lines = launcher.logs(sweep.launcher_ref).splitlines()
    return "\n".join(lines[-tail:]) + ("\n" if lines else "")
