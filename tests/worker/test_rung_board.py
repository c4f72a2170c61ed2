"""The rung board keeps its records in the experiment's folder: a board started again (a
driver restarted for the sweep, or the actor restarted by Ray) answers as before."""

from pathlib import Path

from dualtune.core.early_stopping import Rungs
from dualtune.core.spec import EarlyStopping, Selection
from dualtune.worker.rung_board import RUNGS_FILE, RungBoard, _Board


def rungs() -> Rungs:
    return Rungs.of(EarlyStopping(grace_epochs=1), Selection(), epochs=9, trials=6)


def test_a_board_started_again_takes_back_its_records(tmp_path: Path) -> None:
    path = tmp_path / RUNGS_FILE
    first = _Board(rungs(), str(path))
    cohort = {f"t{i}": {"val/loss_mean": 0.1 * i} for i in range(6)}
    decided = first.decide(1, cohort)
    assert sum(decided.values()) == 2
    again = _Board(rungs(), str(path))
    assert again.decide(1, cohort) == decided  # kept, not judged anew
    # A newcomer is judged against the records the first board made.
    assert again.decide(1, {"late": {"val/loss_mean": 0.15}}) == {"late": False}


def test_a_units_copy_of_the_board_travels_without_the_actor_handle() -> None:
    import pickle

    board = RungBoard("name", "ns", (1, 3), _actor=object())
    copy = pickle.loads(pickle.dumps(board))
    assert (copy.name, copy.namespace, copy.rungs, copy._actor) == ("name", "ns", (1, 3), None)
