"""The driver's link to the service that launched it: fetch the sweep, send trial events.

The worker token (``DUALTUNE_WORKER_TOKEN``) is scoped to one sweep. Events are buffered
and sent in batches by a background thread; while the service is down they wait (with
backoff) and go out when it is back, so a service restart never stops a sweep. Every event
is an idempotent upsert on the service's side, so sending one twice is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from dualtune.core.reporting import TrialOutcome
from dualtune.worker.events import TrialEvent

log = logging.getLogger("dualtune.worker.service")
BATCH = 500
ERROR_LIMIT = 20_000
"""The longest sweep error the service takes (``POST .../failure``)."""


class ServiceRejectedError(RuntimeError):
    """The service refused the driver (its token is revoked: the sweep was cancelled,
    finished, or relaunched elsewhere)."""


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
        """Retry connection errors and 5xx within ``budget_s``; raise on a 4xx."""
        deadline, backoff = time.monotonic() + budget_s, 0.5
        while True:
            try:
                response = self._http.request(method, path, **kw)
                if response.status_code in (401, 403, 404):
                    raise ServiceRejectedError(f"{response.status_code}: {response.text}")
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json()
                problem = f"{response.status_code}: {response.text[:200]}"
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

    def post_events(self, batch: dict[str, Any], *, budget_s: float) -> None:
        self._request("POST", f"/{self.sweep_id}/events", json=batch, budget_s=budget_s)

    def fail(self, generation: int, error: str, *, budget_s: float = 120.0) -> bool:
        """End the sweep ``failed`` with ``error`` before any trial ran (the sweep cannot
        run: ``worker.preflight``); False when the service had already closed it."""
        if len(error) > ERROR_LIMIT:
            error = error[: ERROR_LIMIT - 20] + "\n... (cut)"
        body = self._request(
            "POST",
            f"/{self.sweep_id}/failure",
            json={"generation": generation, "error": error},
            budget_s=budget_s,
        )
        return bool(body["changed"])

    def close(self) -> None:
        self._http.close()


class ServiceEventSink:
    """An ``EventSink`` that delivers to the service from a background thread."""

    def __init__(self, link: ServiceLink, generation: int) -> None:
        self.link = link
        self.generation = generation
        self._events: deque[dict[str, Any]] = deque()
        self._tracking: dict[str, str] = {}
        self._wake = threading.Condition()
        self._closing = False
        self._rejected = False
        self._thread = threading.Thread(target=self._deliver, name="dualtune-events", daemon=True)
        self._thread.start()

    def emit(self, event: TrialEvent) -> None:
        item = asdict(event)
        del item["sweep_id"]
        if item["status"] not in ("running", "succeeded", "failed", "diverged"):
            return
        with self._wake:
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
        with self._wake:
            while not self._events and not self._tracking and not self._closing:
                self._wake.wait()
            if self._closing:
                return None
            events = [self._events[i] for i in range(min(BATCH, len(self._events)))]
            return {"generation": self.generation, "events": events, **self._tracking}

    def _deliver(self) -> None:
        backoff = 1.0
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self.link.post_events(batch, budget_s=0.0)
            except ServiceRejectedError as exc:
                log.warning("the service rejected this driver's events: %s", exc)
                with self._wake:
                    self._rejected = True
                    self._events.clear()
                    self._tracking = {}
                    self._wake.notify_all()
                return
            except ConnectionError:
                with self._wake:  # keep the events; wait, unless closing wakes us
                    self._wake.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            with self._wake:
                for _ in batch["events"]:
                    self._events.popleft()
                if self._tracking == {k: v for k, v in batch.items() if k.startswith("mlflow")}:
                    self._tracking = {}
                self._wake.notify_all()

    def close(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every event to be delivered; True when all were."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while (self._events or self._tracking) and not self._rejected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 1.0))
            delivered = not self._events and not self._tracking and not self._rejected
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout=5)
        return delivered
