"""A trial's MLflow child run, logged through a buffer that survives tracking outages.

Every logging call becomes an operation in a queue. Operations are sent in order; when one
fails (server down, database locked), it and the ones after it stay queued and training
goes on, trying again at the next evaluation (after a backoff). ``finish`` retries what is
left with the full retry budget and returns a ``LoggingSummary`` that counts and names
every operation that could still not be logged: never a crash, never a silent loss.

The child run is found again by its tags when a trial is retried or its sweep resumed, so
a trial has one child run however often it restarts.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient

from dualtune.core.states import TrialState
from dualtune.worker.tracking import per_sample as tables
from dualtune.worker.tracking import plots
from dualtune.worker.tracking.resilient import ResilientClient

PARAMS_PER_BATCH = 100
MAX_NAMED_FAILURES = 40


def _apply(op: _Operation, run_id: str, client: MlflowClient) -> object:
    return op.run(client, run_id)


def _log_params(chunk: list[Param], client: MlflowClient, run_id: str) -> None:
    client.log_batch(run_id, params=chunk)


@dataclass(frozen=True)
class LoggingSummary:
    """What reached MLflow: ``failed`` names each operation that did not."""

    operations: int
    failed: tuple[str, ...] = ()
    last_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def message(self) -> str:
        """Empty when everything was logged; else a sentence naming what was not."""
        if self.ok:
            return ""
        names = list(self.failed)
        if len(names) > MAX_NAMED_FAILURES:
            keep = MAX_NAMED_FAILURES // 2
            names = [*names[:keep], f"… {len(names) - 2 * keep} more …", *names[-keep:]]
        return (
            f"MLflow logging incomplete: {len(self.failed)} of {self.operations} operations "
            f"not logged ({'; '.join(names)}); last error: {self.last_error or 'unknown'}"
        )


@dataclass(frozen=True)
class CompletedRun:
    status: TrialState
    metrics: dict[str, float]
    error: str | None


def _always() -> bool:
    return True


@dataclass
class _Operation:
    description: str
    run: Callable[[MlflowClient, str], object]
    ready: Callable[[], bool] = _always
    """Whether the operation can be sent now (its files are written); the queue waits for
    it, keeping the order, unless the run is being finished."""


def _write_splits(per_sample: dict[str, np.ndarray], epoch: int, directory: Path) -> None:
    for split in ("train", "val"):
        tables.write_split(per_sample, split, epoch, directory)


@dataclass
class TrialRunLogger:
    """The child run of one trial (ARCHITECTURE §3.5)."""

    tracking_uri: str
    experiment_name: str
    sweep_id: str
    trial_id: str
    method: str
    params: dict[str, str]
    parent_run_id: str | None = None
    retry_budget_s: float | None = None
    run_id: str | None = None
    mlflow_client: MlflowClient | None = None
    """An ``MlflowClient`` to share (a pack's members share one); each logger keeps its
    own retry state and error record."""
    _client: ResilientClient = field(init=False)
    _queue: list[_Operation] = field(init=False, default_factory=list)
    _operations: int = field(init=False, default=0)
    _next_try: float = field(init=False, default=0.0)
    _backoff: float = field(init=False, default=1.0)
    _spool: Path = field(init=False)
    _writer: ThreadPoolExecutor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._client = ResilientClient(
            self.tracking_uri, budget_s=self.retry_budget_s, client=self.mlflow_client
        )
        self._spool = Path(tempfile.mkdtemp(prefix=f"dualtune-{self.trial_id}-"))

    # -- the queue
    def _enqueue(self, description: str, run: Callable[[MlflowClient, str], object]) -> None:
        self._queue.append(_Operation(description, run))
        self._operations += 1
        self._flush(budget_s=0.0)

    def _ensure_run(self, budget_s: float) -> bool:
        if self.run_id is not None:
            return True
        ok, run_id = self._client.call(self._find_or_create_run, budget_s=budget_s)
        if ok and run_id:
            self.run_id = run_id
        return self.run_id is not None

    def _flush(self, *, budget_s: float, force: bool = False) -> None:
        """Send queued operations in order until one fails. Without ``force``, waits out the
        backoff after a failure, so an outage costs training one failed call per backoff."""
        if not force and time.monotonic() < self._next_try:
            return
        if not self._ensure_run(budget_s):
            self._failed_attempt()
            return
        run_id = self.run_id
        assert run_id is not None
        while self._queue:
            op = self._queue[0]
            if not force and not op.ready():
                break  # sent at a later flush, in order
            ok, _ = self._client.call(functools.partial(_apply, op, run_id), budget_s=budget_s)
            if not ok:
                self._failed_attempt()
                return
            self._queue.pop(0)
        self._backoff = 1.0

    def _failed_attempt(self) -> None:
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 60.0)

    def _find_or_create_run(self, client: MlflowClient) -> str:
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            raise RuntimeError(f"experiment {self.experiment_name!r} does not exist")
        found = self._find_run(client)
        if found is not None:
            run_id = str(found.info.run_id)
            if found.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {
            "dualtune.sweep_id": self.sweep_id,
            "dualtune.trial_id": self.trial_id,
            "dualtune.method": self.method,
            "dualtune.role": "trial",
            "dualtune.status": TrialState.RUNNING.value,
        }
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = client.create_run(experiment.experiment_id, tags=tags, run_name=self.trial_id)
        return str(run.info.run_id)

    def _find_run(self, client: MlflowClient) -> Run | None:
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return None
        found = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`dualtune.sweep_id` = '{self.sweep_id}' "
                f"and tags.`dualtune.trial_id` = '{self.trial_id}'"
            ),
            max_results=1,
        )
        return found[0] if found else None

    def completed(self) -> CompletedRun | None:
        """The trial's outcome if its child run already finished it (a driver or a Tune trial
        restarted after the trial's end but before Tune recorded it): the trial must not run
        again. ``None`` when it did not, or when MLflow cannot say."""
        ok, run = self._client.call(self._find_run, budget_s=min(5.0, self._client.budget_s))
        if not ok or run is None or run.info.status != "FINISHED":
            return None
        status = run.data.tags.get("dualtune.status")
        if status not in (TrialState.SUCCEEDED, TrialState.DIVERGED):
            return None
        self.run_id = str(run.info.run_id)
        return CompletedRun(
            TrialState(status),
            {k: float(v) for k, v in run.data.metrics.items()},
            run.data.tags.get("dualtune.error"),
        )

    # -- what a trial logs
    def start(self) -> None:
        """Create (or find again) the child run and log the flattened trial config."""
        items = sorted(self.params.items())
        for i in range(0, len(items), PARAMS_PER_BATCH):
            chunk = [Param(k, v) for k, v in items[i : i + PARAMS_PER_BATCH]]
            self._enqueue("params", functools.partial(_log_params, chunk))

    def log_metrics(self, epoch: int, metrics: dict[str, float]) -> None:
        """One ``log_batch`` with every metric of an evaluation, at step = epoch."""
        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, epoch) for k, v in metrics.items()]
        self._enqueue(f"metrics epoch {epoch}", lambda c, r: c.log_batch(r, metrics=batch))

    def log_per_sample(
        self, epoch: int, per_sample: dict[str, np.ndarray], *, epsilon: float | None
    ) -> None:
        """``per_sample/{split}_epoch{E:04d}.parquet`` for train and val. The files are
        written on a background thread (pyarrow encodes without the GIL), so training goes
        on meanwhile; the upload follows in order once they are written."""
        del epsilon
        directory = self._spool / f"per_sample_{epoch:04d}"
        directory.mkdir(exist_ok=True)
        # Copies: the arrays may view live training state (the multiplier table).
        arrays = {k: np.array(v, copy=True) for k, v in per_sample.items()}
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"per-sample-{self.trial_id}")
        written = self._writer.submit(_write_splits, arrays, epoch, directory)

        def upload(client: MlflowClient, run_id: str) -> None:
            written.result()
            client.log_artifacts(run_id, str(directory), "per_sample")

        self._queue.append(_Operation(f"per-sample epoch {epoch}", upload, written.done))
        self._operations += 1
        self._flush(budget_s=0.0)

    def log_final(
        self,
        per_sample: dict[str, np.ndarray],
        *,
        epsilon: float | None,
        multipliers: np.ndarray | None = None,
    ) -> None:
        """``per_sample/hardest.csv``, ``plots/loss_cdf.png`` and ``plots/multipliers.png``."""
        directory = self._spool / "final"
        (directory / "per_sample").mkdir(parents=True, exist_ok=True)
        (directory / "plots").mkdir(exist_ok=True)
        tables.write_hardest(per_sample, directory / "per_sample")
        title = f"{self.trial_id}"
        plots.loss_cdf(per_sample, epsilon, directory / "plots" / "loss_cdf.png", title)
        plots.multipliers(per_sample, multipliers, directory / "plots" / "multipliers.png", title)
        self._enqueue("final artifacts", lambda c, r: c.log_artifacts(r, str(directory)))

    def set_status_tag(self, status: TrialState, error: str | None = None) -> None:
        tag = [RunTag("dualtune.status", status.value)]
        if error:
            tag.append(RunTag("dualtune.error", error[:5000]))
        self._enqueue(f"status {status}", lambda c, r: c.log_batch(r, tags=tag))

    def finish(self, status: str) -> LoggingSummary:
        """End the run (``FINISHED`` or ``FAILED``), retrying what is queued with the full
        budget; the summary names whatever still did not reach MLflow."""
        self._queue.append(
            _Operation(f"end run {status}", lambda c, r: c.set_terminated(r, status))
        )
        self._operations += 1
        self._flush(budget_s=self._client.budget_s, force=True)
        failed = tuple(op.description for op in self._queue)
        if self.run_id is None and not failed:
            failed = ("create run",)
        summary = LoggingSummary(self._operations, failed, self._client.last_error)
        self._queue.clear()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        shutil.rmtree(self._spool, ignore_errors=True)
        return summary
