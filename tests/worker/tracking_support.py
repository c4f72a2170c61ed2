"""A real SQLite MLflow store for the trial logger's tests, and clients that count, slow
down or fail its calls (no Ray)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from dualtune.worker.tracking import TrialRunLogger
from dualtune.worker.tracking.resilient import ResilientClient
from dualtune.worker.tracking.sweep_run import ensure_experiment

EXPERIMENT = "tracking-test"
PARAMS = {"params.epsilon": "0.05", "params.dual_lr": "0.01", "params.seed": "0", "x.y": "1"}


_empty: list[Path] = []


@pytest.fixture(name="uri")
def uri_fixture(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    """A SQLite MLflow store of the test's own, holding the test experiment. MLflow takes
    seconds to build a new database's schema, so it is built once per process and copied."""
    if not _empty:
        path = tmp_path_factory.mktemp("mlflow-empty") / "empty.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()
        _empty.append(path)
    path = tmp_path / "mlflow.db"
    shutil.copyfile(_empty[0], path)
    store = f"sqlite:///{path}"
    assert ensure_experiment(ResilientClient(store), EXPERIMENT) is not None
    return store


class SpyClient(MlflowClient):  # type: ignore[misc]  # MLflow ships no type information
    """A real client that records its ``log_batch`` calls, and can be made slow or down."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri)
        self.batches: list[dict[str, Any]] = []
        self.delay_s = 0.0
        self.down = False

    def _check(self) -> None:
        time.sleep(self.delay_s)
        if self.down:
            raise ConnectionError("tracking server down")

    def log_batch(
        self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kw: Any
    ) -> Any:
        self._check()
        self.batches.append({"metrics": list(metrics), "params": list(params), "tags": list(tags)})
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().create_run(*args, **kwargs)

    def set_terminated(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().set_terminated(*args, **kwargs)

    def log_artifacts(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().log_artifacts(*args, **kwargs)


def logger(uri: str, trial_id: str = "fl-0001", **kwargs: Any) -> TrialRunLogger:
    return TrialRunLogger(
        uri,
        EXPERIMENT,
        sweep_id="sweep",
        trial_id=trial_id,
        method="fl",
        params=PARAMS,
        **kwargs,
    )


def metrics(epoch: int, n: int = 3) -> dict[str, float]:
    """``n`` metrics whose values say which epoch they are from."""
    return {f"m/{i:04d}": epoch + i / 1000 for i in range(n)}


def steps(uri: str, run_id: str, key: str = "m/0000") -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def wait_for_steps(
    uri: str, run: TrialRunLogger, expected: list[int], timeout_s: float = 20
) -> None:
    """Until ``run``'s MLflow run holds ``expected`` steps (sent on the logger's background
    thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if run.run_id is not None and steps(uri, run.run_id) == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run.run_id} never held steps {expected}")
        time.sleep(0.05)


def wait_confirmed(run: TrialRunLogger, timeout_s: float = 20) -> None:
    """Until ``run`` holds no metrics that MLflow has not confirmed."""
    deadline = time.monotonic() + timeout_s
    while run.unsent_metrics():
        if time.monotonic() > deadline:
            raise AssertionError(f"still unsent: {run.unsent_metrics()}")
        time.sleep(0.02)
