"""``examples/notebooks/plugin_task.ipynb``, executed for real: its code cells run in order
in one namespace, as a kernel would run them (nbformat need not be installed), with the
notebook's folder as the working directory, local Ray in this process for
``dualtune.run_sweep`` and a real embedded stack (``dualtune up``) for ``dualtune.Client``."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dualtune.core.catalog import TASKS
from tests.service.stack import Stack

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebooks" / "plugin_task.ipynb"


def _notebook() -> dict[str, Any]:
    notebook: dict[str, Any] = json.loads(NOTEBOOK.read_text())
    return notebook


def _code_cells() -> list[str]:
    return ["".join(c["source"]) for c in _notebook()["cells"] if c["cell_type"] == "code"]


def test_the_notebook_is_nbformat_4_with_no_outputs() -> None:
    notebook = _notebook()
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in notebook["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert all(isinstance(line, str) for line in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == []
            assert cell["execution_count"] is None
    for i, source in enumerate(_code_cells()):
        compile(source, f"{NOTEBOOK.name}[{i}]", "exec")  # every cell is valid Python


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path / "dualtune").start()
    yield s
    s.stop()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.timeout(900)
def test_the_notebook_runs_its_own_task_and_a_sweep_on_the_service(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import ray

    monkeypatch.setenv("DUALTUNE_URL", stack.url)
    monkeypatch.setenv("DUALTUNE_TOKEN", stack.token)
    monkeypatch.setenv("DUALTUNE_NUM_CPUS", "2")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the notebook's work dir
    # A kernel started from the notebook's folder has it on sys.path; Ray's workers get it.
    monkeypatch.chdir(NOTEBOOK.parent)
    monkeypatch.syspath_prepend(str(NOTEBOOK.parent))
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    try:
        for i, source in enumerate(_code_cells()):
            exec(compile(source, f"{NOTEBOOK.name}[{i}]", "exec"), namespace)
    finally:
        ray.shutdown()
        TASKS.unregister("circles")
        sys.modules.pop("circles_task", None)
    out = capsys.readouterr().out

    result = namespace["result"]  # dualtune.run_sweep on the notebook's own task
    assert result.report["trial_counts"]["succeeded"] == 2
    assert [m["method"] for m in result.report["methods"]] == ["erm", "fl"]
    assert all(m["best"] or m["best_infeasible"] for m in result.report["methods"])
    assert all(record.mlflow_run_id for record in result.trials)

    sweep = namespace["sweep"]  # dualtune.Client on the stack
    assert sweep.status == "succeeded"
    assert sweep.trial_counts == {"succeeded": 3}
    report = namespace["report"]
    assert [m.method for m in report.methods] == ["erm", "fl"]
    assert all(m.best is not None and m.best.mlflow_run_id for m in report.methods)
    assert "moons-fl — best per method by train/cvar_0.1" in out
    assert "422 ['spec.task.name']" in out  # the service does not know the in-process task
    assert "unknown task 'circles'" in out
