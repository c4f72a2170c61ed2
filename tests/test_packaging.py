"""The distribution installs one import package, ``dualtune`` (ARCHITECTURE §3.3): the folders
core/, worker/ and service/ go inside it, nothing generic lands at the top of site-packages,
and ``import dualtune`` loads neither torch nor Ray nor MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dualtune

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
SOURCE_FOLDERS = ("dualtune", "core", "worker", "service")


def packages_in_tree() -> set[str]:
    found = set()
    for folder, name in SETUPTOOLS["package-dir"].items():
        base = ROOT / name
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            if folder == "dualtune" and parts and parts[0] in {"core", "worker", "service"}:
                continue
            found.add(".".join((folder, *parts)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    # setuptools installs exactly the listed packages: a new sub-package left out of the list
    # would be missing from every wheel (and so from every image).
    assert set(SETUPTOOLS["packages"]) == packages_in_tree()


def test_the_source_imports_only_through_dualtune() -> None:
    """One path for one module: code that imported ``core.x`` directly would load a second
    copy of it next to ``dualtune.core.x`` in a checkout, and fail where it is installed."""
    bare = []
    for folder in (*SOURCE_FOLDERS, "tests", "bench", "reproduce", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if ".venv" in path.parts or "build" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                bare += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                    for n in names
                    if n.split(".")[0] in {"core", "worker", "service"}
                ]
    assert bare == []


def test_import_dualtune_loads_no_training_stack() -> None:
    code = (
        "import sys, dualtune\n"
        "dualtune.SweepSpec, dualtune.TaskInfo, dualtune.TaskParams, dualtune.Client\n"
        "dualtune.register_task, dualtune.ConstraintKindInfo, dualtune.load_spec\n"
        "heavy = sorted({'torch', 'ray', 'mlflow'} & {m.split('.')[0] for m in sys.modules})\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_every_public_name_resolves() -> None:
    """``dualtune.__all__`` is ARCHITECTURE §3.3's list, and each name loads (torch-side ones
    on first use)."""
    required = {
        "SweepSpec",
        "TrialConfig",
        "load_spec",
        "fit",
        "Task",
        "TaskInfo",
        "TaskParams",
        "Dataset",
        "Split",
        "register_task",
        "run_sweep",
        "Client",
    }
    assert required <= set(dualtune.__all__)
    code = "import dualtune\nfor name in dualtune.__all__: getattr(dualtune, name)\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dualtune.nope  # noqa: B018


@pytest.mark.slow
def test_pip_install_puts_only_dualtune_at_the_top_level(tmp_path: Path) -> None:
    target = tmp_path / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, ROOT],
        check=True,
        cwd=tmp_path,
    )
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert top == ["dualtune", "dualtune-0.1.0.dist-info"]
    installed = target / "dualtune"
    assert (installed / "core" / "spec" / "__init__.py").is_file()
    assert (installed / "service" / "db" / "migrations" / "script.py.mako").is_file()
    entry_points = (target / "dualtune-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert "[dualtune.tasks]" in entry_points
    assert "[dualtune.constraints]" in entry_points
    # The installed copy works on its own (not through this checkout): the spec validates
    # against the built-in tasks it registers by entry point, without torch.
    code = (
        "import sys, dualtune\n"
        f"assert dualtune.__file__.startswith({str(target)!r}), dualtune.__file__\n"
        "spec = dualtune.load_spec({'name': 's', 'task': {'name': 'digits'},"
        " 'constraint': {'kind': 'sample_loss'}, 'methods': ['erm', 'fl']})\n"
        "assert len(spec.trials()) == 2\n"
        "assert 'torch' not in sys.modules\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
