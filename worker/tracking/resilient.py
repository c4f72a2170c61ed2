"""An MLflow client that never raises into training: bounded retries with backoff, and a
record of what could not be done.

MLflow's own HTTP client retries for minutes (7 retries, exponential backoff) before it gives
up; a trial must not stall that long on every call while a tracking server is down. This
client turns those retries off and keeps its own budget instead: each operation is tried
until ``DUALTUNE_MLFLOW_RETRY_BUDGET_S`` (default 30 s) has passed, after which the caller
keeps it buffered and tries again later (see ``TrialRunLogger``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from dualtune.worker.tracking.sqlite_store import use_wal

T = TypeVar("T")

DEFAULT_RETRY_BUDGET_S = 30.0
# Per-request limits for MLflow's REST client: fail fast, our own loop retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def tracking_uri_from_env(cwd: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory (MLflow
    3's own default; never a file store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / 'mlflow.db'}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Where artifacts of a local SQLite store go: ``mlartifacts/`` beside the database (a
    tracking server chooses its own, so ``None`` there)."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").resolve().as_uri()


_clients: dict[str, MlflowClient] = {}
_clients_lock = threading.Lock()


def shared_client(tracking_uri: str) -> MlflowClient:
    """The process's ``MlflowClient`` for ``tracking_uri``, made on first use: a new client
    on a SQLite store checks the store's schema (~50 ms), and a pack builds one logger per
    member. ``MlflowClient`` holds no per-call state, so threads may share it."""
    with _clients_lock:
        client = _clients.get(tracking_uri)
        if client is None:
            use_wal(tracking_uri)  # before the client's engine opens its first connection
            client = _clients[tracking_uri] = MlflowClient(tracking_uri=tracking_uri)
        return client


def retry_budget_s() -> float:
    raw = os.environ.get("DUALTUNE_MLFLOW_RETRY_BUDGET_S")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_RETRY_BUDGET_S
    except ValueError:
        return DEFAULT_RETRY_BUDGET_S


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class ResilientClient:
    """``MlflowClient`` calls with a retry budget; ``call`` returns ``None`` on failure."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        budget_s: float | None = None,
        client: MlflowClient | None = None,
    ) -> None:
        """``client`` defaults to the process's ``shared_client(tracking_uri)``; each
        ``ResilientClient`` keeps its own error record."""
        self.tracking_uri = tracking_uri
        self.budget_s = retry_budget_s() if budget_s is None else budget_s
        self.client = client or shared_client(tracking_uri)
        self.last_error: str | None = None

    def call(
        self, fn: Callable[[MlflowClient], T], *, budget_s: float | None = None
    ) -> tuple[bool, T | None]:
        """Run ``fn(client)``, retrying with exponential backoff (0.2 s … 5 s) until the
        budget is spent. Returns ``(ok, value)``; never raises for tracking failures."""
        budget = self.budget_s if budget_s is None else budget_s
        deadline = time.monotonic() + budget
        delay = 0.2
        while True:
            try:
                value = fn(self.client)
            except Exception as exc:  # any tracking failure is retried, never fatal
                self.last_error = describe_error(exc)
                if time.monotonic() + delay > deadline:
                    return False, None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                return True, value
