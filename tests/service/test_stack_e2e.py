"""End to end with the real service, the local launcher, Ray and MLflow (R2 included)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.ports import free_port
from tests.service.stack import Stack, final, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def moons(name: str, epochs: int, eps: list[float]) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": eps, "dual_lr": [0.05], "seed": 0},
        "train": {"epochs": epochs},
        "logging": {"per_sample_every": 1000},
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "dualtune").start()
    yield s
    s.stop()


def _mlflow(stack: Stack) -> MlflowClient:
    return MlflowClient(f"sqlite:///{stack.data_dir / 'mlflow.db'}")


def _children(mlflow: MlflowClient, sweep_id: str) -> list[Any]:
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(
        experiments, filter_string=f"tags.`dualtune.sweep_id` = '{sweep_id}'", max_results=1000
    )
    return [r for r in runs if r.data.tags.get("dualtune.role") == "trial"]


def test_a_sweep_submitted_over_http_runs_and_reports_every_method(stack: Stack) -> None:
    with stack.client() as api:
        created = api.post("/sweeps", json={"spec": moons("e2e", 4, [0.1, 0.3])})
        assert created.status_code == 201
        sweep_id = created.json()["id"]
        sweep = wait_for(api, sweep_id, final, timeout_s=400)
        assert sweep["status"] == "succeeded", sweep
        assert sweep["trial_counts"] == {"succeeded": 3}
        report = api.get(f"/sweeps/{sweep_id}/report").json()
        trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
        logs = api.get(f"/sweeps/{sweep_id}/logs").text
    assert f"sweep {sweep_id} generation 0: 3 trials" in logs  # the driver's own output

    assert [m["method"] for m in report["methods"]] == ["erm", "fl"]
    assert all(m["best"] is not None for m in report["methods"])
    mlflow = _mlflow(stack)
    parent = mlflow.get_run(sweep["mlflow"]["parent_run_id"])  # MLflow's own id
    assert parent.data.tags["dualtune.sweep_id"] == sweep_id
    assert parent.info.experiment_id == sweep["mlflow"]["experiment_id"]
    children = {r.data.tags["dualtune.trial_id"]: r for r in _children(mlflow, sweep_id)}
    assert set(children) == {t["trial_id"] for t in trials}
    for t in trials:
        child = children[t["trial_id"]]
        assert t["mlflow_run_id"] == child.info.run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert t["metrics"]["train/loss_mean"] == pytest.approx(
            child.data.metrics["train/loss_mean"]
        )


def test_r2_a_service_killed_mid_sweep_finishes_it_after_a_restart(stack: Stack) -> None:
    spec = moons("r2", 60, [0.05, 0.1, 0.2, 0.3])
    with stack.client() as api:
        sweep_id = api.post("/sweeps", json={"spec": spec}).json()["id"]
        before = wait_for(
            api,
            sweep_id,
            lambda s: (
                s["trial_counts"].get("succeeded", 0) >= 1
                and s["trial_counts"].get("running", 0) >= 1
            ),
            timeout_s=400,
        )
        done_before = {
            t["trial_id"]
            for t in api.get(f"/sweeps/{sweep_id}/trials", params={"status": "succeeded"}).json()[
                "items"
            ]
        }
    assert not final(before)
    stack.kill()
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if sweep_id in " ".join(p.info["cmdline"] or [])
    ]

    stack.start()
    with stack.client() as api:
        after = wait_for(api, sweep_id, final, timeout_s=600)
        trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
        listed = api.get("/sweeps").json()["items"]
    assert after["status"] == "succeeded", after
    assert [s["id"] for s in listed] == [sweep_id]  # no sweep lost, none doubled
    assert Counter(t["trial_id"] for t in trials) == Counter({t["trial_id"]: 1 for t in trials})
    assert len(trials) == 5
    assert {t["status"] for t in trials} == {"succeeded"}

    children = _children(_mlflow(stack), sweep_id)
    per_trial = Counter(r.data.tags["dualtune.trial_id"] for r in children)
    assert per_trial == Counter({t["trial_id"]: 1 for t in trials})
    assert {r.info.status for r in children} == {"FINISHED"}
    mlflow = _mlflow(stack)
    for run in children:
        if run.data.tags["dualtune.trial_id"] in done_before:
            # finished before the kill, so not run again: one point per evaluation
            steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "train/loss_mean")]
            assert len(steps) == len(set(steps))


def test_cancel_stops_the_driver_of_a_running_sweep(stack: Stack) -> None:
    with stack.client() as api:
        sweep_id = api.post("/sweeps", json={"spec": moons("cancel", 400, [0.1, 0.3])}).json()[
            "id"
        ]
        wait_for(api, sweep_id, lambda s: s["trial_counts"].get("running", 0) >= 1)
        assert api.post(f"/sweeps/{sweep_id}/cancel").status_code == 202
        sweep = wait_for(api, sweep_id, final, timeout_s=120)
        trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
    assert sweep["status"] == "cancelled"
    assert "cancelled" in {t["status"] for t in trials}
    assert {t["status"] for t in trials} <= {"cancelled", "succeeded"}
    drivers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if sweep_id in " ".join(p.info["cmdline"] or [])
    ]
    assert drivers == []


def test_retry_reruns_the_diverged_trial_in_its_own_child_run(stack: Stack) -> None:
    spec = {
        "name": "retry",
        "task": {"name": "polyfit"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm"],
        "grid": {"lr": [1e6, 1e-2]},
        "train": {"epochs": 4, "batch_size": 30, "optimizer": {"name": "sgd", "lr": 0.01}},
    }
    with stack.client() as api:
        sweep_id = api.post("/sweeps", json={"spec": spec}).json()["id"]
        first = wait_for(api, sweep_id, final, timeout_s=300)
        assert first["trial_counts"] == {"succeeded": 1, "diverged": 1}
        retried = api.post(f"/sweeps/{sweep_id}/retry")
        assert retried.status_code == 202
        assert retried.json()["trial_counts"] == {"succeeded": 1, "pending": 1}
        second = wait_for(api, sweep_id, lambda s: s["generation"] == 1 and final(s), 300)
        trials = {
            t["params"]["lr"]: t for t in api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
        }
    assert second["status"] == "succeeded"
    assert trials[1e6]["status"] == "diverged"  # deterministic: it diverges again
    assert trials[1e6]["attempts"] == 2
    assert trials[1e-2]["attempts"] == 1  # the succeeded trial did not run again
    children = _children(_mlflow(stack), sweep_id)
    assert Counter(r.data.tags["dualtune.trial_id"] for r in children) == Counter(
        {t["trial_id"]: 1 for t in trials.values()}
    )
    assert (stack.data_dir / "tune" / f"{sweep_id}-retry1").is_dir()


def test_demo_runs_a_sweep_through_the_embedded_stack_and_stops_it(tmp_path: Path) -> None:
    """`dualtune demo` (the README's tour) on a small spec: the stack starts, the sweep runs,
    the report and the MLflow UI link are printed, and nothing is left running."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(moons("demo-tiny", 3, [0.2])))
    data_dir = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dualtune.service.cli",
            "demo",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--mlflow-port",
            str(ui_port),
            "--spec",
            str(spec),
            "--no-keep",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DUALTUNE_NUM_CPUS": "2", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded (2 trials: 2 succeeded)" in result.stdout
    assert "best per method" in result.stdout
    assert f"MLflow UI: http://127.0.0.1:{ui_port}/#/experiments/" in result.stdout
    assert (data_dir / "token").is_file()
    assert (data_dir / "mlflow.db").is_file()
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
