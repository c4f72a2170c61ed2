"""Plugin discovery (ARCHITECTURE §3.8): entry points in ``dualtune.tasks`` and
``dualtune.constraints`` become catalog entries, the built-in ones too; whatever cannot be
registered is kept with its reason and its source, and the rest keeps working.

Distributions are written to a folder on ``sys.path`` as an installer leaves them
(``*.dist-info`` with ``METADATA`` and ``entry_points.txt``), so discovery runs through the
real ``importlib.metadata``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS, TaskInfo
from dualtune.core.catalog.builtin_tasks import DIGITS, TwoMoonsParams
from dualtune.core.catalog.registry import TASKS_GROUP, Registry

TASK_MODULE = """
from dualtune import TaskInfo, TaskParams

IMPORTS = globals().setdefault("IMPORTS", 0) + 1

class Params(TaskParams):
    size: int = 8

def info(name):
    return TaskInfo(name, "a test task", "classification", Params, "nowhere:Task")

{body}
"""


def write_distribution(root: Path, dist: str, entry_points: dict[str, str]) -> None:
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{TASKS_GROUP}]\n{lines}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for distributions; the registry forgets them afterwards."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("regtest_")]:
        del sys.modules[name]
    TASKS.reload()


def fresh() -> Registry[TaskInfo]:
    return Registry(TASKS_GROUP, TaskInfo, "task")


def test_the_built_in_entries_come_from_dualtunes_own_entry_points() -> None:
    assert TASKS["digits"] is DIGITS
    assert TASKS.source("digits") == "dualtune 0.1.0 (dualtune.core.catalog.builtin_tasks:DIGITS)"
    assert TASKS.built_in("digits")
    assert CONSTRAINT_KINDS.built_in("sample_loss")
    assert list(TASKS)[:3] == ["two_moons", "digits", "iris_svm"]  # the catalog's order


def test_a_plugin_distribution_registers_its_task(site: Path) -> None:
    (site / "regtest_good.py").write_text(TASK_MODULE.format(body="RINGS = info('rings')"))
    write_distribution(site, "rings-tasks", {"rings": "regtest_good:RINGS"})
    registry = fresh()
    assert registry["rings"].summary == "a test task"
    assert registry.source("rings") == "rings-tasks 0.1 (regtest_good:RINGS)"
    assert not registry.built_in("rings")
    assert "digits" in registry
    assert registry.errors == ()


def test_discovery_runs_once_per_process_until_reloaded(site: Path) -> None:
    (site / "regtest_counted.py").write_text(TASK_MODULE.format(body="RINGS = info('rings')"))
    write_distribution(site, "rings-tasks", {"rings": "regtest_counted:RINGS"})
    registry = fresh()
    for _ in range(3):
        assert "rings" in registry
    assert sys.modules["regtest_counted"].IMPORTS == 1
    (site / "regtest_late.py").write_text(TASK_MODULE.format(body="LATE = info('late')"))
    write_distribution(site, "late-tasks", {"late": "regtest_late:LATE"})
    assert "late" not in registry  # installed after discovery: cached
    registry.reload()
    assert "late" in registry


def test_a_plugin_that_fails_to_import_is_listed_and_the_rest_work(site: Path) -> None:
    (site / "regtest_broken.py").write_text("raise RuntimeError('needs the GPU extra')\n")
    (site / "regtest_good.py").write_text(TASK_MODULE.format(body="RINGS = info('rings')"))
    write_distribution(site, "broken-tasks", {"broken": "regtest_broken:INFO"})
    write_distribution(site, "rings-tasks", {"rings": "regtest_good:RINGS"})
    registry = fresh()
    [error] = registry.errors
    assert (error.group, error.name) == (TASKS_GROUP, "broken")
    assert error.source == "broken-tasks 0.1 (regtest_broken:INFO)"
    assert error.error == "failed to import: RuntimeError: needs the GPU extra"
    assert "broken" not in registry
    assert {"rings", "digits"} <= set(registry)


def test_a_name_collision_is_refused_naming_both_sources(site: Path) -> None:
    (site / "regtest_clash.py").write_text(
        TASK_MODULE.format(body="DIGITS = info('digits')\nRINGS = info('rings')")
    )
    (site / "regtest_again.py").write_text(TASK_MODULE.format(body="RINGS = info('rings')"))
    write_distribution(site, "clash-tasks", {"digits": "regtest_clash:DIGITS"})
    write_distribution(site, "a-rings", {"rings": "regtest_again:RINGS"})
    write_distribution(site, "b-rings", {"rings": "regtest_clash:RINGS"})
    registry = fresh()
    assert registry["digits"] is DIGITS  # dualtune's own entry stays
    messages = {(e.name, e.source): e.error for e in registry.errors}
    assert messages[("digits", "clash-tasks 0.1 (regtest_clash:DIGITS)")] == (
        "task 'digits' is already registered by dualtune 0.1.0 "
        "(dualtune.core.catalog.builtin_tasks:DIGITS); rename one of them"
    )
    # Between two plugins the first by distribution name stays.
    assert registry.source("rings") == "a-rings 0.1 (regtest_again:RINGS)"
    assert messages[("rings", "b-rings 0.1 (regtest_clash:RINGS)")].startswith(
        "task 'rings' is already registered by a-rings 0.1 (regtest_again:RINGS)"
    )


def test_an_entry_point_of_the_wrong_type_or_name_is_refused(site: Path) -> None:
    (site / "regtest_odd.py").write_text(
        TASK_MODULE.format(body="NOT_INFO = {'name': 'odd'}\nOTHER = info('other')")
    )
    write_distribution(
        site, "odd-tasks", {"odd": "regtest_odd:NOT_INFO", "misnamed": "regtest_odd:OTHER"}
    )
    registry = fresh()
    messages = {e.name: e.error for e in registry.errors}
    assert messages == {
        "odd": "regtest_odd:NOT_INFO is a dict, not a dualtune.TaskInfo",
        "misnamed": "the entry point is named 'misnamed' but its task is 'other'",
    }
    assert "odd" not in registry
    assert "other" not in registry


def test_in_process_registration() -> None:
    registry = fresh()
    mine = TaskInfo("mine", "in a notebook", "classification", TwoMoonsParams, "nb:Task")
    assert registry.register(mine) is mine
    registry.register(mine)  # a notebook cell run twice
    assert registry["mine"] is mine
    assert registry.source("mine") == "registered in-process"
    assert registry.registered_in_process() == (mine,)
    other = TaskInfo("mine", "another", "regression", TwoMoonsParams, "nb:Other")
    with pytest.raises(ValueError, match="'mine' is already registered by registered in-process"):
        registry.register(other)
    with pytest.raises(ValueError, match=r"'digits' is already registered by dualtune 0\.1\.0"):
        registry.register(TaskInfo("digits", "mine", "classification", TwoMoonsParams, "x:Y"))
    with pytest.raises(TypeError, match=r"expected a dualtune\.TaskInfo"):
        registry.register({"name": "x"})  # type: ignore[arg-type]
    registry.reload()  # in-process entries survive a new discovery
    assert registry["mine"] is mine
    registry.unregister("mine")
    assert "mine" not in registry
