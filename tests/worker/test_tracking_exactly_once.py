"""Every epoch lands in MLflow once, also when a unit's process dies between logging an
epoch and checkpointing it (ISSUE 15, "exactly-once metrics under a crash"): the checkpoint
keeps the unsent metrics, and a resumed logger skips the steps its run already holds."""

import pytest
from mlflow.tracking import MlflowClient

from dualtune.core.states import TrialState

from .tracking_support import (
    logger,
    metrics,
    steps,
    uri_fixture,  # noqa: F401  (the store fixture, `uri`)
    wait_confirmed,
    wait_for_steps,
)

NEVER = 3600.0
"""A flush interval no test reaches: metrics stay buffered until ``finish``."""


@pytest.mark.parametrize("confirmed", [True, False], ids=["sent", "still-unconfirmed"])
def test_an_epoch_logged_before_the_crash_is_not_logged_again_after_the_resume(
    uri: str, confirmed: bool
) -> None:
    first = logger(uri, flush_s=0)  # flush at every evaluation
    first.start()
    for epoch in (1, 2, 3):
        first.log_metrics(epoch, metrics(epoch))
        wait_for_steps(uri, first, list(range(1, epoch + 1)))
    # The crash: the process dies after epoch 3 reached MLflow and before its checkpoint;
    # the logger is dropped without finish. Epoch 2's checkpoint is the last one saved:
    # with nothing unsent, or taken before MLflow confirmed epochs 1 and 2.
    del first
    checkpoint = [] if confirmed else [(e, {**metrics(e), "epoch": float(e)}) for e in (1, 2)]

    resumed = logger(uri, flush_s=0)
    resumed.start()
    resumed.restore_unsent(checkpoint)
    for epoch in (3, 4):  # epoch 3 trained again from epoch 2's state
        resumed.log_metrics(epoch, metrics(epoch))
    resumed.set_status_tag(TrialState.SUCCEEDED)
    summary = resumed.finish("FINISHED")

    assert summary.ok, summary.message
    assert resumed.run_id is not None
    for key in metrics(0):
        assert steps(uri, resumed.run_id, key) == [1, 2, 3, 4], key
    history = MlflowClient(uri).get_metric_history(resumed.run_id, "m/0002")
    assert [m.value for m in history] == [1.002, 2.002, 3.002, 4.002]


def test_an_epoch_buffered_but_never_sent_is_sent_from_the_checkpoint(uri: str) -> None:
    first = logger(uri, flush_s=0)
    first.start()
    first.log_metrics(1, metrics(1))
    wait_for_steps(uri, first, [1])
    wait_confirmed(first)
    first.flush_s = NEVER  # epochs 2 and 3 stay in the buffer: lost with the process
    first.log_metrics(2, metrics(2))
    checkpoint = first.unsent_metrics()
    assert checkpoint == [(2, {**metrics(2), "epoch": 2.0})]
    first.log_metrics(3, metrics(3))
    del first

    resumed = logger(uri, flush_s=NEVER)
    resumed.start()
    resumed.restore_unsent(checkpoint)
    for epoch in (3, 4):
        resumed.log_metrics(epoch, metrics(epoch))
    assert [step for step, _ in resumed.unsent_metrics()] == [2, 3, 4]
    summary = resumed.finish("FINISHED")

    assert summary.ok, summary.message
    assert resumed.run_id is not None
    assert steps(uri, resumed.run_id) == [1, 2, 3, 4]
    assert steps(uri, resumed.run_id, "epoch") == [1, 2, 3, 4]
    assert resumed.unsent_metrics() == []
