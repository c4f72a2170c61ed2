"""Run one reproduction spec through the sweep driver (local Ray + MLflow) and keep what the
report needs: every trial's final metrics, its train-loss quantiles, the wall time."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from dualtune.core.spec import SweepSpec, load_spec

# Quantile levels of the per-sample train losses kept per trial: evenly spaced up to 0.99,
# then ever closer to 1, so that the figure resolves the top 1 % down to 1e-5 of the samples.
QUANTILES = np.concatenate([np.linspace(0.0, 0.99, 100), 1.0 - np.logspace(-2, -5, 31)[1:], [1.0]])
SPEC_DIR = Path("examples/reproduce")


def spec_path(name: str) -> Path:
    return SPEC_DIR / f"{name}.yaml"


def sweep_id_for(spec: SweepSpec) -> str:
    """Stable per spec content: an unchanged spec resumes (and finds its finished trials);
    an edited one starts afresh."""
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:10]
    name = spec.name if spec.name.startswith("reproduce") else f"reproduce-{spec.name}"
    return f"{name}-{digest}"


def run_spec(name: str, work_dir: Path, *, fresh: bool = False) -> dict[str, Any]:
    """Run ``examples/reproduce/<name>.yaml`` and return the result record (also written to
    ``<work_dir>/results/<name>.json``)."""
    from dualtune.worker.driver import run_sweep
    from dualtune.worker.tracking.sweep_run import final_train_losses

    spec = load_spec(spec_path(name))
    sweep_id = sweep_id_for(spec)
    if fresh:
        sweep_id += "-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    tracking_uri = f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"
    started = time.perf_counter()
    result = run_sweep(
        spec,
        sweep_id=sweep_id,
        storage_path=work_dir / "tune",
        tracking_uri=tracking_uri,
        show_progress=True,
    )
    wall_s = time.perf_counter() - started
    trials: list[dict[str, Any]] = []
    for record in result.trials:
        outcome = record.outcome
        quantiles: list[float] | None = None
        if outcome.status == "succeeded" and record.mlflow_run_id:
            losses = final_train_losses(tracking_uri, record.mlflow_run_id)
            if losses is not None and losses.size:
                quantiles = [float(q) for q in np.quantile(losses, QUANTILES)]
        trials.append(
            {
                "trial_id": outcome.trial_id,
                "method": outcome.method,
                "params": dict(outcome.params),
                "status": outcome.status,
                "error": outcome.error,
                "metrics": dict(outcome.metrics),
                "mlflow_run_id": record.mlflow_run_id,
                "train_loss_quantiles": quantiles,
                "train_loss_levels": [float(q) for q in QUANTILES] if quantiles else None,
            }
        )
    record_out = {
        "name": name,
        "spec": spec.model_dump(mode="json"),
        "sweep_id": sweep_id,
        "tracking_uri": tracking_uri,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "trials": trials,
    }
    out = work_dir / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record_out, indent=1))
    return record_out
