"""The sweep's experiment opens as model training, and its parent run reads at a glance:
the best feasible trial's metrics under ``best/`` and the trial counts, as metrics the runs
table shows (ARCHITECTURE §3.5)."""

import json
import tempfile
from pathlib import Path

import pytest
from matplotlib import image
from mlflow.tracking import MlflowClient

from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import SweepSpec
from dualtune.worker.tracking import ResilientClient, ensure_experiment, ensure_parent_run
from dualtune.worker.tracking.sweep_run import (
    best_feasible,
    log_sweep_report,
    parent_metrics,
    runs_view,
)

SPEC = SweepSpec.model_validate(
    {
        "name": "glance",
        "task": {"name": "two_moons"},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl", "rfl"],
        "grid": {"epsilon": [0.1, 0.2, 0.3], "dual_lr": 0.05},
        "selection": {
            "metric": "val/loss_mean",
            "mode": "min",
            "subject_to": {"train/feasible_frac": {"min": 0.9}},
        },
    }
)


def outcome(trial_id: str, status: str = "succeeded", **metrics: float) -> TrialOutcome:
    """A trial of the method its id starts with (fl and rfl sweep ε and the dual lr);
    ``val__cvar_0_05`` names ``val/cvar_0.05``."""
    method = trial_id.split("-")[0]
    params = {} if method == "erm" else {"dual_lr": 0.05, "epsilon": 0.1}
    named = {k.replace("__", "/").replace("0_", "0."): v for k, v in metrics.items()}
    return TrialOutcome(trial_id, method, params, status, named)


# ERM has the lowest val loss but misses the bound; fl-2 is the best of the feasible, and
# its val CVaR (not a report table metric) comes from the trial itself.
OUTCOMES = [
    outcome("erm-0", val__loss_mean=0.20, train__feasible_frac=0.5),
    outcome("fl-1", val__loss_mean=0.30, train__feasible_frac=0.95),
    outcome("fl-2", val__loss_mean=0.25, train__feasible_frac=0.92, val__cvar_0_05=0.7),
    outcome("rfl-1", val__loss_mean=0.27, train__feasible_frac=0.99),
    outcome("rfl-2", "failed"),
    outcome("rfl-3", "diverged"),
]
COUNTS = {
    "trials/total": 6.0,
    "trials/succeeded": 4.0,
    "trials/failed": 1.0,
    "trials/diverged": 1.0,
    "trials/stopped": 0.0,
    "trials/cancelled": 0.0,
    "trials/feasible": 3.0,
}


def report() -> dict[str, object]:
    return build_report(SPEC, OUTCOMES, sweep_id="glance-1")


def test_the_best_is_the_best_feasible_trial_of_the_whole_sweep() -> None:
    best = best_feasible(report(), OUTCOMES)
    assert best is not None
    method, entry, metrics = best
    assert (method, entry["trial_id"]) == ("fl", "fl-2")
    assert metrics["val/cvar_0.05"] == 0.7


def test_the_parent_metrics_are_the_counts_and_the_best_trials_metrics() -> None:
    assert parent_metrics(report(), OUTCOMES) == {
        **COUNTS,
        "best/val/loss_mean": 0.25,
        "best/train/feasible_frac": 0.92,
        "best/val/cvar_0.05": 0.7,
    }


def test_without_outcomes_the_best_has_the_reports_table_metrics() -> None:
    metrics = parent_metrics(report())
    assert metrics["best/val/loss_mean"] == 0.25
    assert "best/val/cvar_0.05" not in metrics  # not a table metric


def test_mode_max_picks_the_largest() -> None:
    spec = SPEC.model_copy(
        update={
            "selection": SPEC.selection.model_copy(
                update={"metric": "val/loss_mean", "mode": "max"}
            )
        }
    )
    best = best_feasible(build_report(spec, OUTCOMES, sweep_id="glance-1"), OUTCOMES)
    assert best is not None
    assert best[1]["trial_id"] == "fl-1"


def test_a_sweep_without_a_feasible_trial_has_counts_and_no_best() -> None:
    infeasible = [o for o in OUTCOMES if o.method == "erm" or o.status != "succeeded"]
    rep = build_report(SPEC, infeasible, sweep_id="glance-1")
    assert best_feasible(rep, infeasible) is None
    metrics = parent_metrics(rep, infeasible)
    assert not [k for k in metrics if k.startswith("best/")]
    assert metrics["trials/total"] == 3.0
    assert metrics["trials/feasible"] == 0.0


def test_the_runs_table_view_shows_the_grid_the_selection_and_the_counts() -> None:
    assert runs_view(report(), OUTCOMES) == {
        "selectedColumns": [
            "params.`params.epsilon`",
            "params.`params.dual_lr`",
            "metrics.`val/loss_mean`",
            "metrics.`train/feasible_frac`",
            "metrics.`best/val/loss_mean`",
            "metrics.`best/train/feasible_frac`",
            "metrics.`trials/total`",
            "metrics.`trials/succeeded`",
            "metrics.`trials/feasible`",
        ],
        "columnOrder": ["attributes.`Run Name`"],
        "columnWidths": {"attributes.`Run Name`": 280},
    }


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the module: creating an MLflow SQLite store takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_the_experiment_is_model_training_and_the_parent_shows_best_and_counts(
    tracking_uri: str,
) -> None:
    mlflow = MlflowClient(tracking_uri)
    # An experiment a sweep made before the tag existed gets it when the sweep finds it.
    mlflow.create_experiment("glance")
    experiment_id = ensure_experiment(ResilientClient(tracking_uri), "glance")
    assert experiment_id is not None
    fresh_id = ensure_experiment(ResilientClient(tracking_uri), "glance-new")
    assert fresh_id is not None
    for eid in (experiment_id, fresh_id):
        tags = mlflow.get_experiment(eid).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"

    parent = ensure_parent_run(
        ResilientClient(tracking_uri),
        experiment_id,
        sweep_id="glance-1",
        sweep_name="glance",
        params={},
    )
    assert parent is not None
    rep = report()
    assert log_sweep_report(tracking_uri, parent, rep, {}, outcomes=OUTCOMES) == ""
    run = mlflow.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == parent_metrics(rep, OUTCOMES)
    assert run.data.metrics["best/val/loss_mean"] == 0.25
    assert {k: run.data.metrics[k] for k in COUNTS} == COUNTS
    assert run.data.tags["dualtune.best_trial_id"] == "fl-2"
    assert run.data.tags["dualtune.best_method"] == "fl"
    assert {a.path for a in mlflow.list_artifacts(parent)} == {"report.json", "plots"}
    # No loss curves given: the fronts are the only figure.
    assert [a.path for a in mlflow.list_artifacts(parent, "plots")] == ["plots/pareto.png"]
    with tempfile.TemporaryDirectory() as directory:
        png = mlflow.download_artifacts(parent, "plots/pareto.png", directory)
        assert image.imread(png).shape[:2] == (495, 770)  # 7 × 4.5 in at 110 dpi
        logged = json.loads(
            Path(mlflow.download_artifacts(parent, "report.json", directory)).read_text()
        )
    assert logged["pareto"] == rep["pareto"]
    assert logged["pareto"]["methods"][1]["front"] == ["fl-2", "fl-1"]
    view = mlflow.get_experiment(experiment_id).tags["mlflow.sharedViewState.dualtune"]
    assert json.loads(view) == runs_view(rep, OUTCOMES)


def test_the_drivers_old_call_still_logs_the_counts_and_table_metrics(tracking_uri: str) -> None:
    experiment_id = ensure_experiment(ResilientClient(tracking_uri), "glance-old-call")
    assert experiment_id is not None
    parent = ensure_parent_run(
        ResilientClient(tracking_uri),
        experiment_id,
        sweep_id="glance-2",
        sweep_name="glance",
        params={},
    )
    assert parent is not None
    assert log_sweep_report(tracking_uri, parent, report(), {}) == ""
    metrics = MlflowClient(tracking_uri).get_run(parent).data.metrics
    assert metrics["trials/succeeded"] == 4.0
    assert metrics["best/train/feasible_frac"] == 0.92


def test_a_sweep_where_no_trial_has_both_metrics_gets_no_pareto_figure(tracking_uri: str) -> None:
    experiment_id = ensure_experiment(ResilientClient(tracking_uri), "glance-no-front")
    assert experiment_id is not None
    parent = ensure_parent_run(
        ResilientClient(tracking_uri),
        experiment_id,
        sweep_id="glance-3",
        sweep_name="glance",
        params={},
    )
    assert parent is not None
    without_bound_metric = [outcome("fl-1", val__loss_mean=0.3), outcome("rfl-1", "failed")]
    rep = build_report(SPEC, without_bound_metric, sweep_id="glance-3")
    assert all(m["points"] == [] for m in rep["pareto"]["methods"])
    assert log_sweep_report(tracking_uri, parent, rep, {}, outcomes=without_bound_metric) == ""
    mlflow = MlflowClient(tracking_uri)
    assert {a.path for a in mlflow.list_artifacts(parent)} == {"report.json"}
    assert mlflow.get_run(parent).info.status == "FINISHED"
