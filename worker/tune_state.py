"""A sweep's Tune state is keyed to its tracking store.

A driver restores a sweep's Tune experiment (``storage/<experiment>``) only into the tracking
store that holds the results it restores: the experiment records the store and the sweep's
parent run there (``TRACKING_FILE``), and a driver whose store does not hold that parent
run sets the experiment aside (renamed, never deleted) and starts the sweep afresh, so the
new store gets every child run and metric instead of a parent run with no children.

The rule, for an experiment that exists:

* the store holds the recorded parent run: restore (a driver restarted, a service retry, a
  retry of some trials under another experiment name: all the same sweep in the same store);
* the store holds no parent run of the sweep, or another one than recorded (another store,
  such as ``dualtune run`` from another directory, or the parent run was deleted): stale;
* no record (an experiment from before records): restore only if the store holds a parent
  run of the sweep.

When the store cannot be asked (an MLflow outage), nothing is judged: the driver restores,
as it always did, rather than throw finished trials away over an outage.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlflow.tracking import MlflowClient

from dualtune.worker.tracking.resilient import ResilientClient
from dualtune.worker.tracking.sweep_run import parent_run_filter

TRACKING_FILE = "dualtune_tracking.json"
"""In the experiment's directory: ``{"tracking_uri": ..., "parent_run_id": ...}``."""
STALE_SUFFIX = ".stale-"

log = logging.getLogger("dualtune.worker.tune_state")


@dataclass(frozen=True)
class TrackingRecord:
    tracking_uri: str
    parent_run_id: str


def same_store_uri(tracking_uri: str) -> str:
    """``tracking_uri`` spelled so that two spellings of one store compare equal: a SQLite
    or file store by its absolute path (``sqlite:///mlflow.db`` is relative to the working
    directory), any other store as written, without a trailing slash."""
    parsed = urlsplit(tracking_uri)
    if parsed.scheme == "sqlite":
        path = unquote(tracking_uri.removeprefix("sqlite:///"))
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).expanduser().resolve().as_posix()}"
        return tracking_uri
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else tracking_uri
        return Path(path).expanduser().resolve().as_uri()
    return tracking_uri.rstrip("/")


def record_tracking(experiment: Path, tracking_uri: str, parent_run_id: str) -> None:
    """Record (atomically) that ``experiment`` logs into ``tracking_uri`` under parent run
    ``parent_run_id``."""
    experiment.mkdir(parents=True, exist_ok=True)
    path = experiment / TRACKING_FILE
    body = {"tracking_uri": same_store_uri(tracking_uri), "parent_run_id": parent_run_id}
    tmp = path.with_name(f".{TRACKING_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)


def read_tracking(experiment: Path) -> TrackingRecord | None:
    """The experiment's record; ``None`` without one (or an unreadable one)."""
    try:
        body = json.loads((experiment / TRACKING_FILE).read_text())
        return TrackingRecord(str(body["tracking_uri"]), str(body["parent_run_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_parent_run(client: MlflowClient, experiment_name: str, sweep_id: str) -> str | None:
    """The id of the sweep's parent run in ``client``'s store, ``None`` if it holds none.
    Creates nothing. Raises what MLflow raises when the store cannot be asked."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    found = client.search_runs(
        [experiment.experiment_id], filter_string=parent_run_filter(sweep_id), max_results=1
    )
    return str(found[0].info.run_id) if found else None


def stale_reason(experiment: Path, tracking_uri: str, parent_run_id: str | None) -> str | None:
    """Why the Tune experiment at ``experiment`` must not be restored into the store at
    ``tracking_uri``, whose parent run of the sweep is ``parent_run_id`` (``None``: it holds
    none); ``None`` when it may be, or when there is no experiment to restore."""
    if not experiment.is_dir():
        return None
    record = read_tracking(experiment)
    store = same_store_uri(tracking_uri)
    if record is None:
        if parent_run_id is not None:
            return None
        return f"the tracking store {store} holds no parent run of this sweep"
    if parent_run_id == record.parent_run_id:
        return None
    where = f"its runs are in {record.tracking_uri} under parent run {record.parent_run_id}"
    if parent_run_id is None:
        return f"the tracking store {store} holds no parent run of this sweep ({where})"
    return (
        f"the tracking store {store} holds another parent run of this sweep, "
        f"{parent_run_id} ({where})"
    )


def set_aside(experiment: Path, now: datetime | None = None) -> Path:
    """Rename ``experiment`` to a sibling ``<name>.stale-<UTC time>`` and return that path."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = experiment.with_name(f"{experiment.name}{STALE_SUFFIX}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = experiment.with_name(f"{experiment.name}{STALE_SUFFIX}{stamp}-{n}")
    experiment.rename(target)
    return target


def set_aside_if_stale(
    client: ResilientClient,
    experiment: Path,
    *,
    experiment_name: str,
    sweep_id: str,
) -> Path | None:
    """Before the driver finds or creates the parent run: set ``experiment`` aside if it is
    stale for ``client``'s store (``stale_reason``), log where it went, and return its new
    path; ``None`` when it stays (also when the store cannot be asked)."""
    ok, parent_run_id = client.call(lambda c: find_parent_run(c, experiment_name, sweep_id))
    if not ok:
        return None
    reason = stale_reason(experiment, client.tracking_uri, parent_run_id)
    if reason is None:
        return None
    moved = set_aside(experiment)
    log.warning(
        "sweep %s starts afresh: its Tune experiment is not restored because %s; "
        "the earlier Tune results are kept in %s",
        sweep_id,
        reason,
        moved,
    )
    return moved
