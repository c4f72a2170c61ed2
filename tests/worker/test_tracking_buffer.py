"""A trial's logger keeps tracking off the training thread: metrics buffered and sent as
one ``log_batch`` per flush across epochs, every send on the process's sender thread, in
order, retried through an outage, and what never arrived named by ``finish``."""

import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from mlflow import artifacts
from mlflow.tracking import MlflowClient

from dualtune.core.engine.hardest import HardestSamples
from dualtune.core.states import TrialState
from dualtune.worker.tracking import log_trial_figures, shared_client
from dualtune.worker.tracking.resilient import ResilientClient

from .tracking_support import (
    PARAMS,
    SpyClient,
    logger,
    metrics,
    steps,
    uri_fixture,  # noqa: F401  (the store fixture, `uri`)
)

NEVER = 3600.0
"""A flush interval no test reaches: metrics stay buffered until ``finish``."""


def _per_sample(n: int = 300) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "train_loss": rng.exponential(0.3, n),
        "train_label": rng.integers(0, 10, n),
        "val_loss": rng.exponential(0.3, n // 3),
        "val_label": rng.integers(0, 10, n // 3),
        "multiplier": np.maximum(0, rng.normal(0, 1, n)),
    }


def _artifacts(uri: str, run_id: str | None, path: str) -> set[str]:
    assert run_id is not None
    return {a.path for a in MlflowClient(uri).list_artifacts(run_id, path)}


def test_the_epochs_between_two_flushes_go_out_in_one_log_batch(uri: str) -> None:
    spy = SpyClient(uri)
    run = logger(uri, flush_s=NEVER, mlflow_client=spy)
    run.start()
    for epoch in range(1, 6):
        run.log_metrics(epoch, metrics(epoch))
    run.log_per_sample(5, _per_sample(), epsilon=0.1)  # an upload between: overtaken
    run.set_status_tag(TrialState.SUCCEEDED)
    summary = run.finish("FINISHED")

    assert summary.ok, summary.message
    with_metrics = [b for b in spy.batches if b["metrics"]]
    assert len(with_metrics) == 1  # five evaluations, one call
    (batch,) = with_metrics
    assert len(batch["metrics"]) == 5 * (3 + 1)  # three metrics and the epoch, each epoch
    assert [t.key for t in batch["tags"]] == ["dualtune.status"]  # sent along
    assert [p.key for p in batch["params"]] == sorted(PARAMS)  # and the config
    assert len(spy.batches) == 1
    assert "per_sample/train_epoch0005.parquet" in _artifacts(uri, run.run_id, "per_sample")
    assert run.run_id is not None
    for key in [*metrics(0), "epoch"]:
        assert steps(uri, run.run_id, key) == [1, 2, 3, 4, 5], key


def test_a_flush_over_mlflows_limit_is_split_and_each_epoch_counts_once_complete(
    uri: str,
) -> None:
    spy = SpyClient(uri)
    run = logger(uri, flush_s=NEVER, mlflow_client=spy)
    run.start()
    for epoch in (1, 2, 3):
        run.log_metrics(epoch, metrics(epoch, n=400))
    summary = run.finish("FINISHED")

    assert summary.ok, summary.message
    sizes = [len(b["metrics"]) for b in spy.batches if b["metrics"]]
    assert sizes == [1000, 203]  # MLflow refuses more than 1000 metrics in one call
    rows = [(m.step, m.key) for b in spy.batches for m in b["metrics"]]
    for step in (1, 2, 3):
        # The epoch row, which a resumed logger reads as "this epoch is in", comes last.
        assert [key for s, key in rows if s == step][-1] == "epoch"
    assert run.run_id is not None
    assert steps(uri, run.run_id, "m/0399") == [1, 2, 3]


def test_the_training_thread_does_not_wait_for_a_slow_store(uri: str) -> None:
    spy = SpyClient(uri)
    spy.delay_s = 0.3  # every create, log and upload
    run = logger(uri, flush_s=0, mlflow_client=spy)
    started = time.perf_counter()
    run.start()
    for epoch in range(1, 6):
        run.log_metrics(epoch, metrics(epoch))
    run.log_per_sample(5, _per_sample(), epsilon=0.1)
    run.log_final(_per_sample(), epsilon=0.1)
    run.set_status_tag(TrialState.SUCCEEDED)
    on_training_thread = time.perf_counter() - started
    summary = run.finish("FINISHED")

    assert on_training_thread < 0.25, on_training_thread  # sends take 0.3 s each
    assert summary.ok, summary.message
    assert run.run_id is not None
    assert steps(uri, run.run_id) == [1, 2, 3, 4, 5]
    assert "per_sample/val_epoch0005.parquet" in _artifacts(uri, run.run_id, "per_sample")


def test_through_an_outage_operations_stay_queued_and_go_out_in_order(uri: str) -> None:
    spy = SpyClient(uri)
    spy.down = True
    run = logger(uri, flush_s=0, mlflow_client=spy, retry_budget_s=0.2)
    run.start()
    for epoch in (1, 2, 3):
        run.log_metrics(epoch, metrics(epoch))  # never raises
    assert [s for s, _ in run.unsent_metrics()] == [1, 2, 3]
    spy.down = False  # the server is back
    run.log_metrics(4, metrics(4))
    summary = run.finish("FINISHED")

    assert summary.ok, summary.message
    assert run.run_id is not None
    assert steps(uri, run.run_id) == [1, 2, 3, 4]
    sent = [b for b in spy.batches if b["metrics"] or b["params"]]
    assert sent[0]["params"]  # the config first, then the epochs in order
    order = [m.step for b in sent for m in b["metrics"] if m.key == "epoch"]
    assert order == [1, 2, 3, 4]


def test_what_an_outage_kept_from_mlflow_is_named_by_finish(uri: str) -> None:
    spy = SpyClient(uri)
    spy.down = True
    run = logger(uri, flush_s=0, mlflow_client=spy, retry_budget_s=0.2)
    run.start()
    for epoch in (1, 2, 3):
        run.log_metrics(epoch, metrics(epoch))
    run.set_status_tag(TrialState.SUCCEEDED)
    summary = run.finish("FINISHED")

    assert not summary.ok
    assert summary.failed == (
        "params",
        "metrics epoch 1",
        "metrics epoch 2",
        "metrics epoch 3",
        "status succeeded",
        "end run FINISHED",
    )
    assert "6 of 6 operations not logged" in summary.message
    assert "ConnectionError: tracking server down" in summary.message


def test_a_file_that_cannot_be_written_is_named_at_once_not_retried(uri: str) -> None:
    run = logger(uri, retry_budget_s=10)
    run.start()
    run.log_final({}, epsilon=0.1)  # no arrays: hardest.csv cannot be written
    started = time.perf_counter()
    summary = run.finish("FINISHED")

    assert time.perf_counter() - started < 5  # well under the retry budget
    assert summary.failed == ("final artifacts",)
    assert "KeyError" in summary.message


def test_figures_are_drawn_only_when_asked(uri: str) -> None:
    plain = logger(uri, trial_id="fl-plain")
    plain.start()
    plain.log_final(_per_sample(), epsilon=0.1)
    assert plain.finish("FINISHED").ok
    assert _artifacts(uri, plain.run_id, "per_sample") == {"per_sample/hardest.csv"}
    assert _artifacts(uri, plain.run_id, "plots") == set()

    hardest = HardestSamples(
        index=np.arange(4),
        images=np.random.default_rng(0).random((4, 8, 8)),
        label=np.arange(4),
        loss=np.ones(4),
        multiplier=np.ones(4),
    )
    drawn = logger(uri, trial_id="fl-drawn")
    drawn.start()
    drawn.log_final(_per_sample(), epsilon=0.1, hardest=hardest, figures=True)
    assert drawn.finish("FINISHED").ok
    assert _artifacts(uri, drawn.run_id, "plots") == {
        "plots/loss_cdf.png",
        "plots/multipliers.png",
        "plots/hardest.png",
    }


def test_the_driver_draws_a_finished_runs_figures_into_it(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = logger(uri)
    run.start()
    assert run.finish("FINISHED").ok
    assert run.run_id is not None
    failed = log_trial_figures(
        uri,
        run.run_id,
        _per_sample(),
        multipliers=None,
        hardest=None,
        epsilon=0.1,
        title=run.run_name,
    )
    assert failed == ""
    assert _artifacts(uri, run.run_id, "plots") == {"plots/loss_cdf.png", "plots/multipliers.png"}
    png = artifacts.download_artifacts(
        run_id=run.run_id,
        artifact_path="plots/loss_cdf.png",
        dst_path=str(tmp_path),
        tracking_uri=uri,
    )
    assert image.imread(png).shape[0] > 100

    monkeypatch.setenv("DUALTUNE_MLFLOW_RETRY_BUDGET_S", "0")
    unknown = "0" * 32
    failed = log_trial_figures(
        uri, unknown, _per_sample(), multipliers=None, hardest=None, epsilon=0.1, title="t"
    )
    assert failed.startswith(f"figures of run {unknown} not logged; last error: ")


def test_a_child_run_is_named_by_its_grid_values_and_tagged_with_its_trial_id(uri: str) -> None:
    run = logger(uri, trial_id="fl-0d3ad3643d")
    run.start()
    assert run.finish("FINISHED").ok
    assert run.run_id is not None
    found = MlflowClient(uri).get_run(run.run_id)
    assert found.info.run_name == "fl ε=0.05 η=0.01 seed=0"
    assert found.data.tags["dualtune.trial_id"] == "fl-0d3ad3643d"


def test_a_process_has_one_mlflow_client_per_store(uri: str) -> None:
    assert shared_client(uri) is shared_client(uri)
    assert shared_client(uri) is not shared_client("http://127.0.0.1:9")  # never contacted
    assert ResilientClient(uri).client is shared_client(uri)
