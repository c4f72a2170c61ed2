"""The MLflow SQLite store a worker logs into runs in WAL mode; other SQLite databases of
the same process (a service's own) are left in their mode."""

import sqlite3
from pathlib import Path

from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, text

from dualtune.worker.tracking.resilient import shared_client
from dualtune.worker.tracking.sqlite_store import sqlite_file


def journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_the_tracking_store_is_in_wal_mode_and_other_databases_are_not(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    client = shared_client(f"sqlite:///{store}")
    experiment = client.create_experiment("wal")
    run = client.create_run(experiment).info.run_id
    client.log_metric(run, "loss", 0.5, step=1)
    assert journal_mode(store) == "wal"
    # Another process's view (a new client, as the MLflow UI's) sees what was committed.
    other = MlflowClient(f"sqlite:///{store}")
    assert [m.value for m in other.get_metric_history(run, "loss")] == [0.5]

    service_db = tmp_path / "service.db"
    engine = create_engine(f"sqlite:///{service_db}")
    with engine.begin() as connection:
        connection.execute(text("create table t (x integer)"))
    assert journal_mode(service_db) == "delete"  # SQLite's default, untouched


def test_only_sqlite_files_name_a_store_file(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path / 'a.db'}") == str((tmp_path / "a.db").resolve())
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("postgresql://u@localhost/mlflow") is None
    assert sqlite_file("http://127.0.0.1:5000") is None
