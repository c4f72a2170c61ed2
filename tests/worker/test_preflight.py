"""The driver's check before any trial: the task must be registered where the sweep runs,
the spec must validate with it, and the task must keep the task contract."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS
from dualtune.core.catalog.tasks import TaskInfo
from dualtune.worker.preflight import InvalidSweepError, check_sweep
from tests.worker.plugins import BROKEN_MODULE, TINY, WRONG_LOSS, write_distribution

ROOT = Path(__file__).resolve().parents[2]


def tiny_spec(task: str, params: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "preflight",
        "task": {"name": task, "params": params or {}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.2, 0.4], "dual_lr": 0.1},
        "train": {"epochs": 2, "batch_size": 16},
        "runtime": {"pip": ["tiny-tasks==0.1"]},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def registered() -> Iterator[list[TaskInfo]]:
    """Register tasks in-process for one test; unregistered afterwards."""
    infos: list[TaskInfo] = []
    yield infos
    for info in infos:
        TASKS.unregister(info.name)


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for test distributions; the registries forget them after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    monkeypatch.undo()
    TASKS.reload()
    CONSTRAINT_KINDS.reload()


def test_a_built_in_task_passes_and_comes_back_validated() -> None:
    spec = check_sweep(tiny_spec("two_moons", runtime={}))
    assert spec.task.name == "two_moons"
    assert spec.task.params["n_train"] == 512  # the task's defaults, filled in


def test_an_unregistered_task_names_the_requirements_and_the_plugins_that_failed(
    on_path: Path,
) -> None:
    write_distribution(
        on_path, "broken_tasks", {"my_task": "broken_tasks:INFO"}, {"broken_tasks": BROKEN_MODULE}
    )
    with pytest.raises(InvalidSweepError) as caught:
        check_sweep(tiny_spec("my_task"))
    assert str(caught.value) == (
        "task 'my_task' is not registered where the sweep runs (runtime.pip: tiny-tasks==0.1): "
        "its plugin failed to load: my_task from broken_tasks 0.1 (broken_tasks:INFO): failed "
        "to import: RuntimeError: broken_tasks needs a GPU driver this machine lacks"
    )
    with pytest.raises(InvalidSweepError) as caught:
        check_sweep(tiny_spec("other_task", runtime={}))
    message = str(caught.value)
    assert message.startswith(
        "task 'other_task' is not registered where the sweep runs (the spec has no "
        "runtime.pip); registered tasks: adult, "
    )
    assert message.endswith(
        "Plugins that failed to load:\n  - dualtune.tasks: my_task from broken_tasks 0.1 "
        "(broken_tasks:INFO): failed to import: RuntimeError: broken_tasks needs a GPU driver "
        "this machine lacks"
    )


def test_the_plugins_parameters_are_checked_where_it_is_registered(
    registered: list[TaskInfo],
) -> None:
    # The service did not know the task (accepted for its runtime.pip); the driver does.
    registered.append(TASKS.register(TINY))
    with pytest.raises(InvalidSweepError) as caught:
        check_sweep(tiny_spec("tiny_blobs", {"width": 0}))
    assert str(caught.value) == (
        "the spec is not valid where the sweep runs:\n"
        "task.params.width: Input should be greater than or equal to 1"
    )


def test_a_task_that_breaks_the_contract_is_refused_before_any_trial(
    registered: list[TaskInfo],
) -> None:
    registered.append(TASKS.register(WRONG_LOSS))
    with pytest.raises(InvalidSweepError) as caught:
        check_sweep(tiny_spec("tiny_wrong_loss"))
    assert str(caught.value) == (
        "task 'tiny_wrong_loss' (from registered in-process) breaks the task contract: "
        "WrongLossShape.per_sample_loss returned shape (16, 1); expected (16,): one loss per row"
    )


def test_dualtune_run_prints_the_contract_error_and_exits_non_zero(tmp_path: Path) -> None:
    """``python -m dualtune.worker run`` with the plugin installed (on PYTHONPATH): the spec
    loads, the check refuses the task, no traceback."""
    site = write_distribution(
        tmp_path / "site", "tiny_tasks", {"tiny_wrong_loss": "tests.worker.plugins:WRONG_LOSS"}
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec("tiny_wrong_loss")))
    pythonpath = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "dualtune.worker", "run", str(spec), "--no-progress"],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": pythonpath,
            "DUALTUNE_DATA_DIR": str(tmp_path / "data"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "the sweep cannot run" in done.stderr
    assert "WrongLossShape.per_sample_loss returned shape (16, 1); expected (16,)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "data" / "tune").exists()  # nothing started
