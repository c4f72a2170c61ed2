"""A plugin task through the real stack (``dualtune up``: service, local launcher, driver):
the service, which does not know the task, takes it for its ``runtime.pip``; the driver,
where ``runtime.env_vars`` put the plugin on the path, finds that it fails to import and
fails the sweep with the plugin's error before any trial starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service.stack import Stack, final, wait_for
from tests.worker.plugins import BROKEN_MODULE, write_distribution

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def plugin_spec(runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "plugin-e2e",
        "task": {"name": "my_task", "params": {"width": 3}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.1, 0.3], "dual_lr": 0.05},
        "train": {"epochs": 2},
    }
    if runtime is not None:
        spec["runtime"] = runtime
    return spec


def test_a_plugin_that_fails_to_import_fails_the_sweep_at_the_driver(tmp_path: Path) -> None:
    site = write_distribution(
        tmp_path / "site",
        "broken_tasks",
        {"my_task": "broken_tasks:INFO"},
        {"broken_tasks": BROKEN_MODULE},
    )
    runtime = {
        "pip": ["broken-tasks==0.1"],  # not installed by the local launcher: PYTHONPATH is
        "env_vars": {"PYTHONPATH": f"{site}:${{PYTHONPATH}}"},
    }
    stack = Stack(tmp_path / "dualtune").start()
    try:
        with stack.client() as api:
            refused = api.post("/sweeps", json={"spec": plugin_spec()})
            created = api.post("/sweeps", json={"spec": plugin_spec(runtime)})
            assert created.status_code == 201, created.text
            sweep_id = created.json()["id"]
            sweep = wait_for(api, sweep_id, final, timeout_s=300)
            trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
            logs = api.get(f"/sweeps/{sweep_id}/logs").text
    finally:
        stack.stop()

    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "spec.task.name"

    assert sweep["status"] == "failed", sweep
    error = sweep["error"]
    assert error.startswith(
        "task 'my_task' is not registered where the sweep runs (runtime.pip: broken-tasks==0.1)"
    )
    assert error.endswith(
        ": its plugin failed to load: my_task from broken_tasks 0.1 (broken_tasks:INFO): "
        "failed to import: RuntimeError: broken_tasks needs a GPU driver this machine lacks"
    )
    # no trial started: none ran, none has an MLflow run, no Tune experiment exists
    assert len(trials) == 3
    assert {(t["status"], t["attempts"], t["mlflow_run_id"]) for t in trials} == {
        ("failed", 0, None)
    }
    assert sweep["mlflow"]["parent_run_id"] is None
    assert not list(stack.data_dir.glob(f"**/tune/{sweep_id}"))
    assert "runtime.pip (broken-tasks==0.1) is not installed by the local launcher" in logs
    assert f"sweep {sweep_id} cannot run: task 'my_task' is not registered" in logs
    assert logs.count(f"sweep {sweep_id} generation 0") == 1  # launched once, not relaunched
