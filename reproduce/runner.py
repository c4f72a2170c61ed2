"""Run one reproduction spec through the sweep driver (local Ray + MLflow) and keep what the
report needs: every trial's final metrics, the quantiles of its last per-sample train and val
(held-out) losses, the wall time."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dualtune.core.spec import SweepSpec, load_spec

# Quantile levels of the per-sample losses kept per trial and split: evenly spaced up to 0.99,
# then ever closer to 1, so that the figure resolves the top 1 % down to 1e-5 of the samples.
QUANTILES = np.concatenate([np.linspace(0.0, 0.99, 100), 1.0 - np.logspace(-2, -5, 31)[1:], [1.0]])
SPEC_DIR = Path("examples/reproduce")
SPLITS = ("train", "val")


def spec_path(name: str) -> Path:
    return SPEC_DIR / f"{name}.yaml"


def sweep_id_for(spec: SweepSpec) -> str:
    """Stable per spec content: an unchanged spec resumes (and finds its finished trials);
    an edited one starts afresh."""
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:10]
    name = spec.name if spec.name.startswith("reproduce") else f"reproduce-{spec.name}"
    return f"{name}-{digest}"


def final_split_losses(tracking_uri: str, run_id: str, split: str) -> np.ndarray | None:
    """The losses in a child run's last ``per_sample/{split}_epoch*.parquet`` (the trial's
    last epoch: the worker always logs it), or ``None`` where the run has none."""
    from dualtune.worker.tracking.resilient import ResilientClient

    client = ResilientClient(tracking_uri, budget_s=5.0)
    ok, listing = client.call(lambda c: c.list_artifacts(run_id, "per_sample"))
    if not ok or not listing:
        return None
    names = sorted(a.path for a in listing if Path(a.path).name.startswith(f"{split}_epoch"))
    if not names:
        return None
    with tempfile.TemporaryDirectory() as directory:
        ok, path = client.call(lambda c: c.download_artifacts(run_id, names[-1], directory))
        if not ok or path is None:
            return None
        return np.asarray(pd.read_parquet(path)["loss"].to_numpy())


def loss_quantiles(tracking_uri: str, run_id: str) -> dict[str, list[float]]:
    """``{split: quantiles at QUANTILES}`` for the splits whose losses the run logged."""
    out: dict[str, list[float]] = {}
    for split in SPLITS:
        losses = final_split_losses(tracking_uri, run_id, split)
        if losses is not None and losses.size:
            out[split] = [float(q) for q in np.quantile(losses, QUANTILES)]
    return out


def run_spec(name: str, work_dir: Path, *, fresh: bool = False) -> dict[str, Any]:
    """Run ``examples/reproduce/<name>.yaml`` and return the result record (also written to
    ``<work_dir>/results/<name>.json``)."""
    from dualtune.worker.driver import run_sweep

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
        quantiles: dict[str, list[float]] = {}
        if outcome.status == "succeeded" and record.mlflow_run_id:
            quantiles = loss_quantiles(tracking_uri, record.mlflow_run_id)
        trials.append(
            {
                "trial_id": outcome.trial_id,
                "method": outcome.method,
                "params": dict(outcome.params),
                "status": outcome.status,
                "error": outcome.error,
                "metrics": dict(outcome.metrics),
                "mlflow_run_id": record.mlflow_run_id,
                **{f"{split}_loss_quantiles": quantiles.get(split) for split in SPLITS},
                "loss_levels": [float(q) for q in QUANTILES] if quantiles else None,
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
