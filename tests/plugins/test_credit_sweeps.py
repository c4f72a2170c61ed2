"""The example plugin's task and constraint kind through every path a sweep takes, for real:
a packed sweep on Ray whose trial process is killed after a checkpoint resumes to the result
of an uninterrupted run; ``dualtune run`` (a child process, with a broken plugin installed
next to it) logs the sweep to MLflow in the documented layout; and the service stack
(``dualtune up``: uvicorn, the local launcher, Ray, MLflow) runs one submitted over HTTP."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

import dualtune
from dualtune.core.catalog import TASKS
from dualtune.core.engine.fit import fit_unit
from dualtune.core.spec.metric_names import metric_names_for
from dualtune.worker.driver import run_sweep
from tests.service.stack import Stack, final, wait_for
from tests.worker.test_sweep_faults import kill_trials_after_checkpoint

from .helpers import DUALTUNE, credit_spec, env_with, write_broken_plugin

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

# What every child run of a group_fnr trial on german_credit reports at every epoch: §3.4's
# metrics for a classification task under this kind, the kind's own fnr_max included.
REPORTED = set(
    metric_names_for("classification", "group_fnr", TASKS["german_credit"].extra_metrics)
)


@pytest.fixture
def local_ray() -> Iterator[None]:
    """Ray in this process for one test: shut down before the tests whose child processes
    start their own runtimes (two on 2 cores starve each other)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_killed_pack_of_plugin_trials_resumes_to_the_uninterrupted_result(
    local_ray: None, tmp_path: Path, one_thread: None
) -> None:
    spec = dualtune.load_spec(
        credit_spec(
            task={"name": "german_credit", "params": {"model": "mlp", "hidden": [32]}},
            methods=["fl"],
            grid={"epsilon": [0.0, 0.05], "dual_lr": 0.5, "seed": 0},
            train={"epochs": 20, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}},
            limits={"max_trials": 10, "max_failures": 2, "checkpoint_every_s": 0},
            logging={"per_sample_every": 1000},
            pack=2,
        )
    )
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "tune"
    watcher, killed = kill_trials_after_checkpoint(storage, 2)
    result = run_sweep(
        spec,
        sweep_id="kill-credit",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    watcher.join(timeout=1)
    assert killed, "the pack's process was never seen, so never killed"
    assert [r.outcome.status for r in result.trials] == ["succeeded"] * 2

    uninterrupted = fit_unit(spec.trials())
    client = MlflowClient(tracking_uri)
    for record in result.trials:
        expected = uninterrupted.results[record.outcome.trial_id].final
        for name, value in expected.items():
            if "/" in name and not name.startswith("time/"):
                assert record.outcome.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6)
        # Resumed, not restarted, and every epoch logged once: those before the kill, and
        # one the kill may have caught between its logging and its checkpoint.
        history = client.get_metric_history(record.mlflow_run_id or "", "val/fnr_max")
        assert sorted(m.step for m in history) == list(range(1, 21))
        lambdas = client.get_metric_history(record.mlflow_run_id or "", "dual/lambda_max")
        assert max(m.value for m in lambdas) > 0  # the bound was active at some point


@dataclass(frozen=True)
class CreditRun:
    spec: dualtune.SweepSpec
    client: MlflowClient
    parent: Run
    children: list[Run]


@pytest.fixture(scope="module")
def credit_run(tmp_path_factory: pytest.TempPathFactory) -> CreditRun:
    """``dualtune run`` of a 3-trial group_fnr sweep (erm, fl, alm), as a user runs it, with
    a broken plugin installed next to the working one."""
    root = tmp_path_factory.mktemp("credit-run")
    spec_path = root / "credit.yaml"
    spec_path.write_text(yaml.safe_dump(credit_spec()))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    broken = write_broken_plugin(root / "site")
    done = subprocess.run(
        [DUALTUNE, "run", str(spec_path), "--storage", str(root / "tune"), "--no-progress"],
        env=env_with(broken, MLFLOW_TRACKING_URI=tracking_uri),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "alm" in done.stdout  # the report table, one row per method
    spec = dualtune.load_spec(spec_path)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return CreditRun(spec, client, parent, children)


def test_dualtune_run_logs_a_plugin_sweep_to_mlflow_as_documented(credit_run: CreditRun) -> None:
    client, parent, children = credit_run.client, credit_run.parent, credit_run.children
    trials = {t.trial_id: t for t in credit_run.spec.trials()}
    sweep_id = parent.data.tags["dualtune.sweep_id"]
    assert sorted(c.data.tags["dualtune.method"] for c in children) == ["alm", "erm", "fl"]
    assert {c.data.tags["dualtune.trial_id"] for c in children} == set(trials)

    for child in children:
        tags, run_id = child.data.tags, child.info.run_id
        trial = trials[tags["dualtune.trial_id"]]
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["dualtune.sweep_id"] == sweep_id
        assert tags["dualtune.method"] == trial.method
        assert child.data.params == trial.flat_params()
        assert child.info.status == "FINISHED"
        assert set(child.data.metrics) >= REPORTED, REPORTED - set(child.data.metrics)
        for name in ("val/fnr_max", "val/feasible_frac", "dual/lambda_max"):
            steps = [m.step for m in client.get_metric_history(run_id, name)]
            assert steps == [1, 2, 3], name
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        assert plots == {"plots/loss_cdf.png", "plots/multipliers.png"}
        tables = {a.path for a in client.list_artifacts(run_id, "per_sample")}
        assert {"per_sample/train_epoch0003.parquet", "per_sample/hardest.csv"} <= tables
        table = client.download_artifacts(run_id, "per_sample/train_epoch0003.parquet")
        frame = pd.read_parquet(table)
        assert len(frame) == 700
        # a group column per attribute of the task: the constraint's and the other one
        assert {"index", "loss", "multiplier", "label", "group_sex", "group_age"} <= set(frame)
        hardest = pd.read_csv(client.download_artifacts(run_id, "per_sample/hardest.csv"))
        assert len(hardest) > 0
    fl = next(c for c in children if c.data.tags["dualtune.method"] == "fl")
    assert fl.data.metrics["dual/lambda_max"] > 0  # group_fnr's multipliers moved

    report_file = client.download_artifacts(parent.info.run_id, "report.json")
    report = json.loads(Path(report_file).read_text())
    assert [m["method"] for m in report["methods"]] == ["erm", "fl", "alm"]
    parent_plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/compare_loss_cdf.png" in parent_plots


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "dualtune").start()
    yield s
    s.stop()


def test_a_plugin_sweep_submitted_to_the_service_runs_end_to_end(stack: Stack) -> None:
    with stack.client() as api:
        spec = credit_spec(name="credit-e2e", methods=["erm", "fl"], train={"epochs": 2})
        created = api.post("/sweeps", json={"spec": spec})
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        sweep = wait_for(api, sweep_id, final, timeout_s=300)
        assert sweep["status"] == "succeeded", sweep
        assert sweep["trial_counts"] == {"succeeded": 2}
        trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
        report = api.get(f"/sweeps/{sweep_id}/report").json()
    assert [m["method"] for m in report["methods"]] == ["erm", "fl"]
    assert all(m["best"] is not None for m in report["methods"])
    mlflow = MlflowClient(f"sqlite:///{stack.data_dir / 'mlflow.db'}")
    parent = mlflow.get_run(sweep["mlflow"]["parent_run_id"])
    assert parent.data.tags["dualtune.sweep_id"] == sweep_id
    for t in trials:
        child = mlflow.get_run(t["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["dualtune.trial_id"] == t["trial_id"]
        assert t["metrics"]["val/fnr_max"] == pytest.approx(child.data.metrics["val/fnr_max"])
