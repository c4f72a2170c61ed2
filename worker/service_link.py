"""The driver's link to the service that launched it: fetch the sweep, send trial events.

The worker token (``DUALTUNE_WORKER_TOKEN``) is scoped to one sweep. Events are buffered
and sent in batches by a background thread; while the service is down they wait (with
backoff) and go out when it is back, so a service restart never stops a sweep. Every event
is an idempotent upsert on the service's side, so sending one twice is harmless.

The service judges each event on its own: one it refuses (an unknown trial, a state after a
final one) comes back in the answer with its reason, is logged and dropped for good, and
the others flow on. A refused token (401, 403, 404 on any call) means this driver is a
stray, or its sweep is over: the sink remembers it (``refused``), drops what it holds and
tells the driver, which stops its Tuner (``worker.refusal``). When no batch went out for
``DUALTUNE_HEARTBEAT_S`` seconds the sink sends an empty one, which checks the token, so a
driver notices its revocation even while no trial changes state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from dualtune.core.reporting import TrialOutcome
from dualtune.core.states import TRIAL_REPORTED
from dualtune.worker.events import TrialEvent, finite_metrics

log = logging.getLogger("dualtune.worker.service")
BATCH = 500
ERROR_LIMIT = 20_000
"""The longest error the service takes (a sweep's ``POST .../failure``, a trial's event)."""
HEARTBEAT_S = float(os.environ.get("DUALTUNE_HEARTBEAT_S", "10"))
RETRYABLE = frozenset({408, 429})
"""4xx answers that say "later", not "never": retried like a 5xx."""


class ServiceRejectedError(RuntimeError):
    """The service refused the driver (its token is revoked: the sweep was cancelled,
    finished, or relaunched elsewhere)."""


class InputRejectedError(RuntimeError):
    """The service refused a request's body as a whole (a 4xx other than the token's):
    sending it again cannot help."""


def cut_error(error: str) -> str:
    """``error`` as the service takes it: no NUL characters, at most ``ERROR_LIMIT`` long."""
    error = error.replace("\x00", "")
    return error if len(error) <= ERROR_LIMIT else error[: ERROR_LIMIT - 20] + "\n... (cut)"


@dataclass(frozen=True)
class RejectedEvent:
    """An event the service refused, and why; dropped, never sent again."""

    trial_id: str | None
    status: str | None
    reason: str


@dataclass(frozen=True)
class ServiceSweep:
    sweep_id: str
    spec: dict[str, Any]
    """The spec as the service stored it: the driver validates it (``worker.preflight``),
    here, where the sweep's plugins are installed."""
    generation: int
    run_trial_ids: list[str]
    finished: list[tuple[TrialOutcome, str | None]]
    """Trials of earlier generations this driver does not run, with their MLflow run ids:
    the sweep's report on MLflow covers them too."""

    @property
    def experiment_name(self) -> str:
        """Tune experiment: generation 0 is the sweep; each retry is an experiment of its
        own holding only the retried trials."""
        return self.sweep_id if self.generation == 0 else f"{self.sweep_id}-retry{self.generation}"


class ServiceLink:
    def __init__(
        self, service_url: str, sweep_id: str, token: str, *, timeout_s: float = 10.0
    ) -> None:
        self.sweep_id = sweep_id
        self._http = httpx.Client(
            base_url=service_url.rstrip("/") + "/api/v1/worker/sweeps",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def _request(self, method: str, path: str, *, budget_s: float, **kw: Any) -> Any:
        """Retry connection errors, 5xx (and 408, 429) within ``budget_s``; raise
        ``ServiceRejectedError`` for a refused token, ``InputRejectedError`` for another
        4xx."""
        deadline, backoff = time.monotonic() + budget_s, 0.5
        while True:
            try:
                response = self._http.request(method, path, **kw)
                code = response.status_code
                if code in (401, 403, 404):
                    raise ServiceRejectedError(f"{code}: {response.text[:2000]}")
                if code < 400:
                    return response.json()
                if code < 500 and code not in RETRYABLE:
                    raise InputRejectedError(f"{code}: {response.text[:2000]}")
                problem = f"{code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            if time.monotonic() + backoff > deadline:
                raise ConnectionError(f"the service did not answer in {budget_s:.0f} s: {problem}")
            time.sleep(backoff)
            backoff = min(backoff * 2, 15.0)

    def fetch(self, *, budget_s: float = 300.0) -> ServiceSweep:
        body = self._request("GET", f"/{self.sweep_id}", budget_s=budget_s)
        run = set(body["run_trial_ids"])
        finished = [
            (
                TrialOutcome(
                    t["trial_id"], t["method"], t["params"], t["status"], t["metrics"], t["error"]
                ),
                t["mlflow_run_id"],
            )
            for t in body["trials"]
            if t["trial_id"] not in run
        ]
        return ServiceSweep(
            body["sweep_id"],
            dict(body["spec"]),
            int(body["generation"]),
            list(body["run_trial_ids"]),
            finished,
        )

    def post_events(self, batch: dict[str, Any], *, budget_s: float) -> list[dict[str, Any]]:
        """Send one batch; the events the service refused, as it answered them
        (``{index, trial_id, reason}``, ``index`` = the event's position in the batch)."""
        ack = self._request("POST", f"/{self.sweep_id}/events", json=batch, budget_s=budget_s)
        rejected = ack.get("rejected") if isinstance(ack, dict) else None
        return [r for r in rejected or [] if isinstance(r, dict)]

    def fail(self, generation: int, error: str, *, budget_s: float = 120.0) -> bool:
        """End the sweep ``failed`` with ``error`` before any trial ran (the sweep cannot
        run: ``worker.preflight``); False when the service had already closed it."""
        body = self._request(
            "POST",
            f"/{self.sweep_id}/failure",
            json={"generation": generation, "error": cut_error(error)},
            budget_s=budget_s,
        )
        return bool(body["changed"])

    def close(self) -> None:
        self._http.close()


class ServiceEventSink:
    """An ``EventSink`` (a ``RefusableSink``) that delivers to the service from a background
    thread. ``on_refused`` is called once, from that thread, when the service refuses the
    driver's token."""

    def __init__(
        self,
        link: ServiceLink,
        generation: int,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.link = link
        self.generation = generation
        self.heartbeat_s = heartbeat_s
        self._on_refused = on_refused
        self._events: deque[dict[str, Any]] = deque()
        self._tracking: dict[str, str] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._refused: str | None = None
        self._rejected: list[RejectedEvent] = []
        self._last_sent = time.monotonic()
        self._thread = threading.Thread(target=self._deliver, name="dualtune-events", daemon=True)
        self._thread.start()

    @property
    def refused(self) -> str | None:
        """Why the service refused this driver (its answer), or ``None``."""
        with self._wake:
            return self._refused

    @property
    def rejected_events(self) -> list[RejectedEvent]:
        """The events the service refused so far, with its reasons."""
        with self._wake:
            return list(self._rejected)

    def emit(self, event: TrialEvent) -> None:
        if event.status not in TRIAL_REPORTED:
            return
        item = asdict(event)
        del item["sweep_id"]
        item["metrics"] = finite_metrics(event.metrics)
        if event.error is not None:
            item["error"] = cut_error(event.error)
        with self._wake:
            if self._refused is not None:
                return  # nobody listens any more
            self._events.append(item)
            self._wake.notify()

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        if experiment_id and parent_run_id:
            with self._wake:
                self._tracking = {
                    "mlflow_experiment_id": experiment_id,
                    "mlflow_parent_run_id": parent_run_id,
                }
                self._wake.notify()

    def _take(self) -> dict[str, Any] | None:
        """The next batch: pending events and tracking, or an empty heartbeat once
        ``heartbeat_s`` passed without a batch; ``None`` when closing."""
        with self._wake:
            while not self._events and not self._tracking and not self._closing:
                due = self._last_sent + self.heartbeat_s - time.monotonic()
                if due <= 0:
                    break
                self._wake.wait(due)
            if self._closing:
                return None
            events = [self._events[i] for i in range(min(BATCH, len(self._events)))]
            return {"generation": self.generation, "events": events, **self._tracking}

    def _refuse(self, reason: str) -> None:
        log.error("the service refused this driver (%s): stopping the sweep here", reason)
        with self._wake:
            self._refused = reason
            self._events.clear()
            self._tracking = {}
            self._wake.notify_all()
        if self._on_refused is not None:
            self._on_refused(reason)

    def _rejections(self, batch: list[dict[str, Any]], answer: list[dict[str, Any]]) -> None:
        for entry in answer:
            index = entry.get("index")
            sent = batch[index] if isinstance(index, int) and 0 <= index < len(batch) else {}
            rejected = RejectedEvent(
                entry.get("trial_id") or sent.get("trial_id"),
                sent.get("status"),
                str(entry.get("reason") or "no reason given"),
            )
            log.warning(
                "the service rejected the %s event of trial %s, dropped: %s",
                rejected.status or "?",
                rejected.trial_id or "?",
                rejected.reason,
            )
            self._rejected.append(rejected)

    def _deliver(self) -> None:
        backoff = 1.0
        while True:
            batch = self._take()
            if batch is None:
                return
            events: list[dict[str, Any]] = batch["events"]
            try:
                answer = self.link.post_events(batch, budget_s=0.0)
            except ServiceRejectedError as exc:
                self._refuse(str(exc))
                return
            except InputRejectedError as exc:
                # Should not happen (each event is judged alone): drop the batch rather than
                # block every later event behind it.
                log.error("the service refused a batch of %d events whole: %s", len(events), exc)
                answer = [
                    {"index": i, "reason": f"the batch was refused: {exc}"}
                    for i in range(len(events))
                ]
            except ConnectionError:
                with self._wake:  # keep the events; wait, unless closing wakes us
                    self._wake.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            with self._wake:
                self._last_sent = time.monotonic()
                self._rejections(events, answer)
                for _ in events:
                    self._events.popleft()
                if self._tracking == {k: v for k, v in batch.items() if k.startswith("mlflow")}:
                    self._tracking = {}
                self._wake.notify_all()

    def close(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every event to be delivered; True when all were
        (refused events count as delivered: the service answered them)."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while (self._events or self._tracking) and self._refused is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 1.0))
            delivered = not self._events and not self._tracking and self._refused is None
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout=5)
        return delivered
