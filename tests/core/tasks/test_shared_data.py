"""``core.tasks.shared_data``: a provided dataset replaces the task's own load, a
``record_loads`` block collects (and reuses) what was loaded in it, nothing else is kept."""

from dualtune.core.tasks import load_task
from dualtune.core.tasks.shared_data import data_key, load_data, provide, record_loads

PARAMS = {"n_train": 64, "n_val": 32}


def test_a_provided_dataset_is_used_instead_of_loading() -> None:
    task = load_task("two_moons", PARAMS)
    mine = load_task("two_moons", {"n_train": 80, "n_val": 32}).load()
    provide({data_key("two_moons", task): mine})
    try:
        assert load_data(task, "two_moons") is mine
        other = load_task("two_moons", {"n_train": 64, "n_val": 40})  # another key
        assert len(load_data(other, "two_moons").val.y) == 40
    finally:
        provide({})
    assert len(load_data(task, "two_moons").train.y) == 64


def test_record_loads_collects_and_reuses_only_inside_its_block() -> None:
    task = load_task("two_moons", PARAMS)
    held: dict[str, object] = {}
    with record_loads(held) as loaded:
        data = load_data(task, "two_moons")
    assert loaded is held
    assert held == {data_key("two_moons", task): data}
    with record_loads(held):  # a second block into the same dict: loaded once
        assert load_data(load_task("two_moons", PARAMS), "two_moons") is data
    load_data(task, "two_moons")  # outside: not collected
    assert list(held) == [data_key("two_moons", task)]


def test_the_key_is_the_validated_params_defaults_included() -> None:
    given = load_task("two_moons", {"n_train": 64})
    spelled = load_task("two_moons", {**given.params.model_dump(), "n_train": 64})
    assert data_key("two_moons", given) == data_key("two_moons", spelled)
    assert data_key("two_moons", given) != data_key("digits", given)
