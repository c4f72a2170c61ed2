"""The MLflow SQLite store a worker logs into runs in WAL mode; other SQLite databases of
the same process (a service's own) are left in their mode."""

import sqlite3
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune.worker.tracking.resilient import shared_client
from dualtune.worker.tracking.sqlite_store import sqlite_file


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_new_tracking_store_is_in_wal_mode_and_reads_beside_its_writer(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"  # does not exist yet: MLflow creates its tables in it
    client = shared_client(f"sqlite:///{store}")
    experiment = client.create_experiment("wal")
    run = client.create_run(experiment).info.run_id
    client.log_metric(run, "loss", 0.5, step=1)
    assert journal_mode(store) == "wal"
    other = MlflowClient(f"sqlite:///{store}")  # another reader, as the MLflow UI
    assert [m.value for m in other.get_metric_history(run, "loss")] == [0.5]

    service_db = tmp_path / "service.db"
    with sqlite3.connect(service_db) as connection:
        connection.execute("create table t (x integer)")
    assert journal_mode(service_db) == "delete"  # SQLite's default, untouched


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:////abs/dir/mlflow.db", "/abs/dir/mlflow.db"),
        ("sqlite:///rel.db", str(Path("rel.db").resolve())),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://u@localhost/mlflow", None),
        ("http://127.0.0.1:5000", None),
    ],
)
def test_only_a_sqlite_uri_names_a_store_file(uri: str, path: str | None) -> None:
    assert sqlite_file(uri) == path
