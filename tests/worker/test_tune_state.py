"""A sweep's Tune experiment is restored only into the tracking store that holds its parent
run (``worker.tune_state``); a stale one is set aside, never deleted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune.worker.tracking import ResilientClient, ensure_experiment, ensure_parent_run
from dualtune.worker.tune_state import (
    TRACKING_FILE,
    find_parent_run,
    read_tracking,
    record_tracking,
    same_store_uri,
    set_aside,
    set_aside_if_stale,
    stale_reason,
)


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A Tune experiment directory with something in it."""
    path = tmp_path / "tune" / "sweep-1"
    path.mkdir(parents=True)
    (path / "experiment_state.json").write_text("{}")
    return path


def _parent(uri: str, sweep_id: str = "sweep-1") -> str:
    client = ResilientClient(uri)
    experiment_id = ensure_experiment(client, "state-test")
    assert experiment_id is not None
    run_id = ensure_parent_run(
        client, experiment_id, sweep_id=sweep_id, sweep_name="state-test", params={}
    )
    assert run_id is not None
    return run_id


def test_the_same_store_with_the_recorded_parent_run_restores(experiment: Path) -> None:
    record_tracking(experiment, "sqlite:////data/mlflow.db", "run-a")
    assert stale_reason(experiment, "sqlite:////data/mlflow.db", "run-a") is None


def test_another_spelling_of_the_same_sqlite_store_restores(
    experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    record_tracking(experiment, f"sqlite:///{tmp_path / 'mlflow.db'}", "run-a")
    assert stale_reason(experiment, "sqlite:///mlflow.db", "run-a") is None


def test_a_store_without_the_parent_run_is_stale_and_says_where_the_runs_are(
    experiment: Path,
) -> None:
    record_tracking(experiment, "sqlite:////a/mlflow.db", "run-a")
    reason = stale_reason(experiment, "sqlite:////b/mlflow.db", None)
    assert reason is not None
    assert "sqlite:////b/mlflow.db holds no parent run" in reason
    assert "sqlite:////a/mlflow.db under parent run run-a" in reason


def test_a_store_with_another_parent_run_of_the_sweep_is_stale(experiment: Path) -> None:
    record_tracking(experiment, "http://mlflow:5000/", "run-a")
    reason = stale_reason(experiment, "http://mlflow:5000", "run-b")
    assert reason is not None
    assert "run-b" in reason
    assert "run-a" in reason


def test_an_unrecorded_experiment_restores_only_where_the_sweep_has_a_parent_run(
    experiment: Path,
) -> None:
    assert stale_reason(experiment, "sqlite:////a/mlflow.db", "run-a") is None
    assert stale_reason(experiment, "sqlite:////a/mlflow.db", None) is not None


def test_no_experiment_is_never_stale(tmp_path: Path) -> None:
    assert stale_reason(tmp_path / "absent", "sqlite:////a/mlflow.db", None) is None


def test_the_record_is_one_small_json_file_replaced_whole(experiment: Path) -> None:
    record_tracking(experiment, "http://mlflow:5000/", "run-a")
    record_tracking(experiment, "http://mlflow:5000/", "run-b")
    assert [p.name for p in experiment.iterdir() if "tracking" in p.name] == [TRACKING_FILE]
    record = read_tracking(experiment)
    assert record is not None
    assert (record.tracking_uri, record.parent_run_id) == ("http://mlflow:5000", "run-b")
    (experiment / TRACKING_FILE).write_text("{not json")
    assert read_tracking(experiment) is None


def test_file_stores_compare_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert same_store_uri("mlruns") == same_store_uri(f"file://{tmp_path / 'mlruns'}")


def test_set_aside_renames_next_to_it_and_keeps_everything(experiment: Path) -> None:
    now = datetime(2026, 12, 1, 13, 5, 9, tzinfo=UTC)
    first = set_aside(experiment, now)
    assert first == experiment.with_name("sweep-1.stale-20261201T130509Z")
    assert (first / "experiment_state.json").read_text() == "{}"
    assert not experiment.exists()
    experiment.mkdir()
    second = set_aside(experiment, now)  # the same second again: a name of its own
    assert second != first
    assert second.is_dir()
    assert first.is_dir()


def test_find_parent_run_finds_the_drivers_parent_run_and_creates_nothing(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    assert find_parent_run(client, "state-test", "sweep-1") is None
    assert client.get_experiment_by_name("state-test") is None
    run_id = _parent(uri)
    assert find_parent_run(client, "state-test", "sweep-1") == run_id
    assert find_parent_run(client, "state-test", "sweep-2") is None


def test_a_run_into_a_fresh_store_sets_the_experiment_aside_and_logs_where(
    experiment: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_a = f"sqlite:///{tmp_path / 'a.db'}"
    record_tracking(experiment, store_a, _parent(store_a))
    assert (
        set_aside_if_stale(
            ResilientClient(store_a), experiment, experiment_name="state-test", sweep_id="sweep-1"
        )
        is None
    )
    assert experiment.is_dir()

    store_b = f"sqlite:///{tmp_path / 'b.db'}"
    with caplog.at_level(logging.WARNING, logger="dualtune.worker.tune_state"):
        moved = set_aside_if_stale(
            ResilientClient(store_b), experiment, experiment_name="state-test", sweep_id="sweep-1"
        )
    assert moved is not None
    assert moved.is_dir()
    assert not experiment.exists()
    assert str(moved) in caplog.text
    assert store_a in caplog.text


def test_a_store_that_cannot_be_asked_leaves_the_experiment_to_restore(
    experiment: Path,
) -> None:
    record_tracking(experiment, "sqlite:////a/mlflow.db", "run-a")
    down = ResilientClient("http://127.0.0.1:9", budget_s=0.0)  # nothing listens on port 9
    assert set_aside_if_stale(down, experiment, experiment_name="x", sweep_id="sweep-1") is None
    assert experiment.is_dir()
