"""A trial's MLflow child run, logged off the training thread through a buffer that
survives tracking outages.

Every logging call becomes an operation in the logger's queue; the process's sender thread
(``background.SENDER``) sends them in order (values may overtake artifact uploads, never
each other or the run's end). When one fails (server down, database
locked), it and the ones after it stay queued and training goes on; the queue is tried
again at a later call, after a backoff. ``finish`` waits for the queue with the full retry
budget and returns a ``LoggingSummary`` that counts and names every operation that could
still not be logged: never a crash, never a silent loss.

Metrics are buffered: each evaluation's metrics wait in the logger and go out as one
``log_batch`` per flush (``DUALTUNE_MLFLOW_FLUSH_S``), many epochs at once. Consecutive
metrics, params and tags operations are sent as one ``log_batch`` within MLflow's limits.

Exactly once across a crash: a unit keeps its unsent metrics in its checkpoint
(``unsent_metrics``, ``restore_unsent``) and a logger never logs a step at or below its
run's watermark, the highest ``epoch`` step MLflow already holds, read when the run is
found again. An epoch logged before a crash and trained again after the resume is not
logged twice; one buffered but never sent is sent from the checkpoint.

The child run is found again by its tags when a trial is retried or its sweep resumed, so
a trial has one child run however often it restarts.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient

from dualtune.core.engine.hardest import HardestSamples
from dualtune.core.states import TrialState
from dualtune.worker.tracking import per_sample as tables
from dualtune.worker.tracking.background import SENDER, WRITER, serial_executor
from dualtune.worker.tracking.resilient import ResilientClient, describe_error, shared_client
from dualtune.worker.tracking.run_names import child_run_name
from dualtune.worker.tracking.trial_figures import PLOTS_DIR, render_trial_figures

MAX_NAMED_FAILURES = 40
# MLflow's limits on one log_batch (mlflow.utils.validation).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000

WATERMARK_METRIC = "epoch"
"""The metric whose highest step in a run is the last epoch MLflow holds: logged with every
evaluation, last in its batch (so an evaluation split over several batches counts only once
all of it is in)."""
FLUSH_ENV = "DUALTUNE_MLFLOW_FLUSH_S"
DEFAULT_FLUSH_S = 5.0
NODE_TAG = "dualtune.node"
"""The address of the Ray node a trial's latest start ran on (Ray's node IP: a pod's IP on
Kubernetes). Set at every start, so a trial Tune retried on another node names that one;
``NODE_ID_TAG`` holds the same node's Ray node id."""
NODE_ID_TAG = "dualtune.ray_node_id"
GRID_PARAMS_PREFIX = "params."
"""Where a trial's grid values sit in its flat params (``TrialConfig.flat_params``)."""


def flush_interval_s() -> float:
    """``DUALTUNE_MLFLOW_FLUSH_S``: seconds between metric flushes (0: at every
    evaluation)."""
    raw = os.environ.get(FLUSH_ENV)
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_FLUSH_S
    except ValueError:
        return DEFAULT_FLUSH_S


def _number(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def run_name(method: str, params: Mapping[str, str]) -> str:
    """The child run's readable name (``run_names.child_run_name``) from a trial's flat
    params: its grid values are the ``params.*`` keys."""
    grid = {
        k.removeprefix(GRID_PARAMS_PREFIX): _number(v)
        for k, v in params.items()
        if k.startswith(GRID_PARAMS_PREFIX)
    }
    return child_run_name(method, grid)


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


@dataclass(frozen=True)
class _Step:
    """Metrics of one evaluation, with the time they were measured (a retried send repeats
    the same rows, which MLflow's SQL store then keeps once)."""

    step: int
    metrics: dict[str, float]
    timestamp_ms: int


@dataclass
class _Operation:
    """One queued thing to log. A ``batch`` operation (metrics, params, tags) may be sent in
    one ``log_batch`` with its neighbours; any other has its own ``send``."""

    names: tuple[str, ...]
    """What the summary names if it is not logged: one per evaluation for metrics."""
    steps: tuple[_Step, ...] = ()
    params: tuple[Param, ...] = ()
    tags: tuple[RunTag, ...] = ()
    send: Callable[[MlflowClient, str], object] | None = None
    ends_run: bool = False
    """The run's end: nothing overtakes it."""
    waits_for_metrics: bool = False
    """Held back until metrics (or ``finish``) come, to go out in their ``log_batch``: a
    ``log_batch`` costs MLflow's SQL store several commits however little it holds."""
    files: Future[object] | None = None
    """The files ``send`` uploads, being written on the file thread: the queue waits for
    them, keeping the order, unless the run is being finished."""

    @property
    def size(self) -> int:
        return sum(len(s.metrics) for s in self.steps) + len(self.params) + len(self.tags)

    def ready(self) -> bool:
        return self.files is None or self.files.done()


def _metric_rows(steps: Iterable[_Step], watermark: int) -> list[Metric]:
    rows = []
    for s in steps:
        if s.step <= watermark:
            continue  # already in the run: logged before a crash, trained again since
        rows += [Metric(k, v, s.timestamp_ms, s.step) for k, v in s.metrics.items()]
    return rows


def _split_steps(steps: list[_Step]) -> list[list[_Step]]:
    """Groups of whole evaluations of at most ``MAX_METRICS_PER_BATCH`` metrics (one
    evaluation with more is split, its watermark metric in the last part)."""
    groups: list[list[_Step]] = [[]]
    size = 0
    for s in steps:
        items = list(s.metrics.items())
        while items:
            room = MAX_METRICS_PER_BATCH - size
            if room <= 0:
                groups.append([])
                size, room = 0, MAX_METRICS_PER_BATCH
            part, items = items[:room], items[room:]
            groups[-1].append(_Step(s.step, dict(part), s.timestamp_ms))
            size += len(part)
    return [g for g in groups if g]


def _write_splits(per_sample: dict[str, np.ndarray], epoch: int, directory: Path) -> None:
    for split in ("train", "val"):
        tables.write_split(per_sample, split, epoch, directory)


def _write_final(
    directory: Path,
    per_sample: dict[str, np.ndarray],
    *,
    figures: bool,
    multipliers: np.ndarray | None,
    hardest: HardestSamples | None,
    epsilon: float | None,
    title: str,
) -> None:
    (directory / "per_sample").mkdir(parents=True, exist_ok=True)
    tables.write_hardest(per_sample, directory / "per_sample")
    if figures:
        render_trial_figures(
            directory / PLOTS_DIR,
            per_sample,
            multipliers=multipliers,
            hardest=hardest,
            epsilon=epsilon,
            title=title,
        )


def _copy(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Copies: the arrays may view live training state (the multiplier table).
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


_experiments: dict[tuple[str, str], str] = {}
_experiments_lock = threading.Lock()


def _experiment_id(client: MlflowClient, tracking_uri: str, name: str) -> str | None:
    """The experiment's id, looked up once per process (a sweep's experiment is never
    renamed while it runs)."""
    key = (tracking_uri, name)
    with _experiments_lock:
        if key in _experiments:
            return _experiments[key]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    with _experiments_lock:
        _experiments[key] = str(experiment.experiment_id)
    return str(experiment.experiment_id)


def _forget_experiment(tracking_uri: str, name: str) -> None:
    with _experiments_lock:
        _experiments.pop((tracking_uri, name), None)


_NOT_SEARCHED = object()


@dataclass
class TrialRunLogger:
    """The child run of one trial (ARCHITECTURE §3.5).

    Called from one thread (the training thread); its MLflow calls run on the process's
    sender thread. ``params`` are the trial's flat params (``TrialConfig.flat_params``);
    the run is named from their grid values.
    """

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
    """Defaults to the process's ``shared_client``; each logger keeps its own retry state
    and error record."""
    flush_s: float | None = None
    """Seconds between metric flushes; ``None`` reads ``DUALTUNE_MLFLOW_FLUSH_S``."""
    _client: ResilientClient = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _queue: deque[_Operation] = field(init=False, default_factory=deque)
    _buffer: list[_Step] = field(init=False, default_factory=list)
    _lost: list[str] = field(init=False, default_factory=list)
    """Operations that cannot be sent at all (their files could not be written)."""
    _files: list[Future[object]] = field(init=False, default_factory=list)
    _operations: int = field(init=False, default=0)
    _last_flush: float = field(init=False, default=0.0)
    _scheduled: bool = field(init=False, default=False)
    _closed: bool = field(init=False, default=False)
    _next_try: float = field(init=False, default=0.0)
    _backoff: float = field(init=False, default=1.0)
    _watermark: int = field(init=False, default=0)
    _found: object = field(init=False, default=_NOT_SEARCHED)
    """``completed``'s search result (a ``Run`` or ``None``), reused to create the run."""
    _spool: Path = field(init=False)

    def __post_init__(self) -> None:
        self._client = ResilientClient(
            self.tracking_uri,
            budget_s=self.retry_budget_s,
            client=self.mlflow_client or shared_client(self.tracking_uri),
        )
        if self.flush_s is None:
            self.flush_s = flush_interval_s()
        self._spool = Path(tempfile.mkdtemp(prefix=f"dualtune-{self.trial_id}-"))
        self._last_flush = time.monotonic()

    @property
    def run_name(self) -> str:
        return run_name(self.method, self.params)

    # -- the queue (training thread side)
    def _enqueue(self, op: _Operation) -> None:
        with self._lock:
            self._queue.append(op)
        self._operations += len(op.names)
        self._kick()

    def _flush_buffer(self) -> None:
        """Move the buffered metrics into the queue: one operation per ``log_batch``."""
        with self._lock:
            steps, self._buffer = self._buffer, []
            for group in _split_steps(steps):
                self._queue.append(
                    _Operation(
                        tuple(dict.fromkeys(f"metrics epoch {s.step}" for s in group)),
                        tuple(group),
                    )
                )
        self._last_flush = time.monotonic()

    def _kick(self) -> None:
        """Have the sender thread send what is queued, unless it is backing off after a
        failure, or already about to, or the run is finished."""
        if self._closed or time.monotonic() < self._next_try:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        serial_executor(SENDER).submit(self._drain, force=False, budget_s=0.0)

    # -- the queue (sender thread side)
    def _drain(self, *, force: bool, budget_s: float) -> None:
        """Send queued operations in order until one fails (metrics, params and tags may
        overtake artifact uploads: ``_next_batch``). Without ``force``, waits out the backoff
        after a failure, so an outage costs one failed call per backoff, and leaves uploads
        whose files are not written yet for a later drain; with it, waits for them."""
        with self._lock:
            self._scheduled = False
        if not force and time.monotonic() < self._next_try:
            return
        if not self._ensure_run(budget_s):
            self._failed_attempt()
            return
        while True:
            with self._lock:
                if not self._queue:
                    break
                head = self._queue[0]
            if head.send is not None and (force or head.ready()):
                if head.files is not None:
                    error = head.files.exception()  # waits for the files when forced
                    if error is not None:
                        self._client.last_error = describe_error(error)
                        with self._lock:
                            self._lost += self._queue.popleft().names
                        continue
                ops = [head]
            else:
                ops = self._next_batch()
                if not ops or (not force and all(op.waits_for_metrics for op in ops)):
                    break  # files not written yet, or params waiting for metrics
            ok, _ = self._client.call(functools.partial(self._send, ops=ops), budget_s=budget_s)
            if not ok:
                self._failed_attempt()
                return
            with self._lock:
                for op in ops:
                    self._queue.remove(op)
        self._backoff = 1.0

    def _next_batch(self) -> list[_Operation]:
        """The first metrics, params and tags operations in the queue that fit one
        ``log_batch``, in order. They may overtake artifact uploads (which hold files, not
        values a batch could depend on), never the end of the run."""
        ops: list[_Operation] = []
        metrics = params = tags = 0
        with self._lock:
            for op in self._queue:
                if op.send is not None:
                    if op.ends_run:
                        break
                    continue
                m = metrics + sum(len(s.metrics) for s in op.steps)
                p, t = params + len(op.params), tags + len(op.tags)
                if ops and (
                    m > MAX_METRICS_PER_BATCH
                    or max(p, t) > MAX_PARAMS_TAGS_PER_BATCH
                    or m + p + t > MAX_ENTITIES_PER_BATCH
                ):
                    break
                ops.append(op)
                metrics, params, tags = m, p, t
        return ops

    def _send(self, client: MlflowClient, *, ops: list[_Operation]) -> None:
        run_id = self.run_id
        assert run_id is not None
        if ops[0].send is not None:
            ops[0].send(client, run_id)
            return
        metrics = _metric_rows((s for op in ops for s in op.steps), self._watermark)
        params = [p for op in ops for p in op.params]
        tags = [t for op in ops for t in op.tags]
        if metrics or params or tags:
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def _failed_attempt(self) -> None:
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 60.0)

    def _ensure_run(self, budget_s: float) -> bool:
        if self.run_id is not None:
            return True
        ok, run_id = self._client.call(self._find_or_create_run, budget_s=budget_s)
        if ok and run_id:
            self.run_id = run_id
        return self.run_id is not None

    def _find_or_create_run(self, client: MlflowClient) -> str:
        experiment_id = _experiment_id(client, self.tracking_uri, self.experiment_name)
        if experiment_id is None:
            raise RuntimeError(f"experiment {self.experiment_name!r} does not exist")
        found = self._found if isinstance(self._found, Run) else None
        if self._found is _NOT_SEARCHED:
            found = self._find_run(client)
        if found is not None:
            run_id = str(found.info.run_id)
            if found.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            history = client.get_metric_history(run_id, WATERMARK_METRIC)
            self._watermark = max((m.step for m in history), default=0)
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
        try:
            run = client.create_run(experiment_id, tags=tags, run_name=self.run_name)
        except Exception:
            _forget_experiment(self.tracking_uri, self.experiment_name)  # deleted since?
            raise
        return str(run.info.run_id)

    def _find_run(self, client: MlflowClient) -> Run | None:
        experiment_id = _experiment_id(client, self.tracking_uri, self.experiment_name)
        if experiment_id is None:
            return None
        found = client.search_runs(
            [experiment_id],
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
        if not ok:
            return None
        self._found = run  # the run to log into: not searched for again
        if run is None or run.info.status != "FINISHED":
            return None
        status = run.data.tags.get("dualtune.status")
        if status not in (TrialState.SUCCEEDED, TrialState.DIVERGED, TrialState.STOPPED):
            return None
        self.run_id = str(run.info.run_id)
        return CompletedRun(
            TrialState(status),
            {k: float(v) for k, v in run.data.metrics.items()},
            run.data.tags.get("dualtune.error"),
        )

    # -- what a trial logs
    def start(self) -> None:
        """Create (or find again) the child run, on the sender thread, and log the flattened
        trial config (with the first metrics)."""
        items = sorted(self.params.items())
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = tuple(Param(k, v) for k, v in items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
            self._enqueue(_Operation(("params",), params=chunk, waits_for_metrics=True))
        if not items:
            self._kick()  # the run is created now, while training goes on

    def set_node(self, ip: str, node_id: str) -> None:
        """Tag the run with the Ray node this start runs on (``NODE_TAG``, ``NODE_ID_TAG``);
        sent with the first metrics."""
        tags = (RunTag(NODE_TAG, ip), RunTag(NODE_ID_TAG, node_id))
        self._enqueue(_Operation(("node tags",), tags=tags, waits_for_metrics=True))

    def log_metrics(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Buffer an evaluation's metrics at step = epoch; flushed (one ``log_batch`` for
        every evaluation since the last flush) every ``flush_s`` seconds and at ``finish``."""
        values = {k: float(v) for k, v in metrics.items() if k != WATERMARK_METRIC}
        values[WATERMARK_METRIC] = float(epoch)  # last: see WATERMARK_METRIC
        with self._lock:
            self._buffer.append(_Step(epoch, values, int(time.time() * 1000)))
        self._operations += 1
        flush_s = self.flush_s or 0.0
        if time.monotonic() - self._last_flush >= flush_s:
            self._flush_buffer()
            self._kick()

    def unsent_metrics(self) -> list[tuple[int, dict[str, float]]]:
        """Metrics logged here and not yet confirmed by MLflow, oldest first, one entry per
        evaluation: what a checkpoint keeps so that a resumed unit sends them
        (``restore_unsent``)."""
        with self._lock:
            steps = [s for op in self._queue for s in op.steps] + self._buffer
        merged: dict[int, dict[str, float]] = {}
        for s in steps:
            merged.setdefault(s.step, {}).update(s.metrics)
        return sorted(merged.items())

    def restore_unsent(self, items: Iterable[tuple[int, Mapping[str, float]]]) -> None:
        """Buffer a checkpoint's ``unsent_metrics`` again, before anything logged since (a
        resumed unit calls it before its first evaluation). Steps MLflow already holds are
        left out when sent (the run's watermark)."""
        stamp = int(time.time() * 1000)
        restored = []
        for step, metrics in items:
            values = {k: float(v) for k, v in metrics.items() if k != WATERMARK_METRIC}
            values[WATERMARK_METRIC] = float(step)
            restored.append(_Step(int(step), values, stamp))
        with self._lock:
            newer = {s.step for s in self._buffer}
            self._buffer[:0] = [s for s in restored if s.step not in newer]
            self._operations += len(restored)

    def log_per_sample(
        self, epoch: int, per_sample: dict[str, np.ndarray], *, epsilon: float | None
    ) -> None:
        """``per_sample/{split}_epoch{E:04d}.parquet`` for train and val. The files are
        written on the file thread (pyarrow encodes without the GIL), so training goes on
        meanwhile; the upload follows in order once they are written."""
        del epsilon
        directory = self._spool / f"per_sample_{epoch:04d}"
        directory.mkdir(exist_ok=True)
        written = self._write_files(_write_splits, _copy(per_sample), epoch, directory)

        def upload(client: MlflowClient, run_id: str) -> None:
            client.log_artifacts(run_id, str(directory), "per_sample")

        self._enqueue(_Operation((f"per-sample epoch {epoch}",), send=upload, files=written))

    def log_final(
        self,
        per_sample: dict[str, np.ndarray],
        *,
        epsilon: float | None,
        multipliers: np.ndarray | None = None,
        hardest: HardestSamples | None = None,
        figures: bool = False,
    ) -> None:
        """``per_sample/hardest.csv``; with ``figures`` (``logging.plots: all``) also
        ``plots/loss_cdf.png``, ``plots/multipliers.png`` and, when ``hardest`` is given,
        ``plots/hardest.png``. Written on the file thread, uploaded in order."""
        directory = self._spool / "final"
        written = self._write_files(
            _write_final,
            directory,
            _copy(per_sample),
            figures=figures,
            multipliers=None if multipliers is None else np.array(multipliers, copy=True),
            hardest=hardest,
            epsilon=epsilon,
            title=self.run_name,
        )

        def upload(client: MlflowClient, run_id: str) -> None:
            client.log_artifacts(run_id, str(directory))

        self._enqueue(_Operation(("final artifacts",), send=upload, files=written))

    def _write_files(
        self, fn: Callable[..., None], *args: object, **kwargs: object
    ) -> Future[object]:
        written: Future[object] = serial_executor(WRITER).submit(fn, *args, **kwargs)
        self._files.append(written)
        # Once the files are there, the queue may go on past them.
        written.add_done_callback(lambda _: self._kick())
        return written

    def set_status_tag(self, status: TrialState, error: str | None = None) -> None:
        self._flush_buffer()  # the status comes after the metrics that led to it
        tags = [RunTag("dualtune.status", status.value)]
        if error:
            tags.append(RunTag("dualtune.error", error[:5000]))
        self._enqueue(_Operation((f"status {status}",), tags=tuple(tags)))

    def finish(self, status: str) -> LoggingSummary:
        """End the run (``FINISHED`` or ``FAILED``), sending what is buffered and queued
        with the full retry budget; the summary names whatever still did not reach MLflow."""
        self._flush_buffer()
        self._closed = True

        def end(client: MlflowClient, run_id: str) -> None:
            client.set_terminated(run_id, status)

        op = _Operation((f"end run {status}",), send=end, ends_run=True)
        with self._lock:
            self._queue.append(op)
        self._operations += 1
        done = serial_executor(SENDER).submit(
            self._drain, force=True, budget_s=self._client.budget_s
        )
        try:
            done.result()
        except Exception as exc:  # a bug in sending must not fail the trial: it is reported
            self._client.last_error = describe_error(exc)
        for written in self._files:
            written.exception()  # the files are written before the spool goes
        with self._lock:
            # Once each: an evaluation split over two batches is one thing not logged.
            failed = tuple(
                dict.fromkeys((*self._lost, *(name for op in self._queue for name in op.names)))
            )
            self._queue.clear()
        if self.run_id is None and not failed:
            failed = ("create run",)
        shutil.rmtree(self._spool, ignore_errors=True)
        return LoggingSummary(self._operations, failed, self._client.last_error)
