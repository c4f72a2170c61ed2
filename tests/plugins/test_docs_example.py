"""docs/plugins.md runs as written: its marked blocks (``<!-- example: NAME -->`` before a
fence) are the files of a plugin package, a spec, the commands to try it, a notebook cell,
Dockerfiles, a ``helm upgrade`` and a ``runtime.pip`` spec. The package is installed with
pip into a folder of its own (not into this environment), then catalogued, validated and run
through ``dualtune run``; the notebook cell registers the same modules in-process instead."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

import dualtune
from tests.deploy.chart import render
from tests.deploy.test_images import hadolint

from .helpers import DUALTUNE, env_with

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
MARKED = re.compile(r"<!-- example: (?P<name>\S+) -->\n```[a-z]*\n(?P<body>.*?)^```", re.S | re.M)
PACKAGE_FILES = (
    "my-tasks/pyproject.toml",
    "my-tasks/my_tasks/__init__.py",
    "my-tasks/my_tasks/catalog.py",
    "my-tasks/my_tasks/task.py",
    "my-tasks/my_tasks/constraint.py",
)


def blocks() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in MARKED.finditer(DOC.read_text()):
        assert match["name"] not in found, f"two blocks are marked {match['name']}"
        found[match["name"]] = match["body"]
    return found


def write_example(root: Path) -> Path:
    """The package's files and the spec, under ``root`` as the doc lays them out."""
    doc = blocks()
    for name in (*PACKAGE_FILES, "cancer_logit_norm.yaml"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc[name])
    return root


def commands(block: str) -> list[tuple[list[str], str]]:
    """The block's ``dualtune ...`` lines as argument lists, each with its comment."""
    out = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        if command.strip():
            out.append((shlex.split(command), comment.strip()))
    return out


def test_every_block_the_doc_promises_is_marked() -> None:
    assert set(blocks()) == {
        *PACKAGE_FILES,
        "cancer_logit_norm.yaml",
        "commands",
        "notebook",
        "Dockerfile.credit-worker",
        "Dockerfile.credit-service",
        "helm",
        "runtime_pip.yaml",
    }
    pyproject = tomllib.loads(blocks()["my-tasks/pyproject.toml"])
    assert pyproject["project"]["entry-points"] == {
        "dualtune.tasks": {"breast_cancer": "my_tasks.catalog:BREAST_CANCER"},
        "dualtune.constraints": {"logit_norm": "my_tasks.catalog:LOGIT_NORM"},
    }


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_the_docs_plugin_installs_and_runs_as_written(tmp_path: Path) -> None:
    root = write_example(tmp_path)
    site = tmp_path / "site"
    installed = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--target", str(site), str(root / "my-tasks")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    assert (site / "my_tasks-0.1.0.dist-info" / "entry_points.txt").is_file()
    env = env_with(site, DUALTUNE_DATA_DIR=str(tmp_path / "data"))
    env.pop("MLFLOW_TRACKING_URI", None)  # the doc's default: ./mlflow.db

    def dualtune_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DUALTUNE, *args], capture_output=True, text=True, env=env, cwd=root, timeout=300
        )

    listed = dualtune_cli("catalog")
    assert listed.returncode == 0, listed.stderr
    for text in ("breast_cancer", "logit_norm", "my-tasks 0.1.0 (my_tasks.catalog:LOGIT_NORM)"):
        assert text in listed.stdout, text
    assert "plugins that failed to load" not in listed.stdout

    (validate, validate_says), (run, _) = commands(blocks()["commands"])
    assert validate[:2] == ["dualtune", "validate"]
    assert run[:2] == ["dualtune", "run"]
    validated = dualtune_cli(*validate[1:])
    assert validated.returncode == 0, validated.stdout + validated.stderr
    total, _, per_method = validate_says.partition(": ")  # "3 trials: erm 1, fl 2"
    assert f"{total}" in validated.stdout
    assert f"per method: {per_method}" in validated.stdout
    ran = dualtune_cli(*run[1:], "--no-progress")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cancer-logit-norm")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`dualtune.trial_id` != ''")
    methods = sorted(r.data.tags["dualtune.method"] for r in runs)
    assert methods == ["erm", "fl", "fl"]
    assert all(r.info.status == "FINISHED" for r in runs)
    fl = next(r for r in runs if r.data.tags["dualtune.method"] == "fl")
    # a per-sample kind: one multiplier per training sample in the per-sample table
    last = client.download_artifacts(fl.info.run_id, "per_sample/train_epoch0005.parquet")
    table = pd.read_parquet(last)
    assert len(table) == 426
    assert table["multiplier"].notna().all()
    assert (table["multiplier"] > 0).any()

    # a wrong parameter is refused as the doc says
    bogus = yaml.safe_load((root / "cancer_logit_norm.yaml").read_text())
    bogus["task"]["params"]["bogus"] = 1
    (root / "bogus.yaml").write_text(yaml.safe_dump(bogus))
    refused = dualtune_cli("validate", "bogus.yaml")
    assert refused.returncode == 2
    said = re.search(r"\(`(spec\.task\.params\.bogus): (.*?)` over REST", DOC.read_text(), re.S)
    assert said is not None
    message = " ".join((refused.stdout + refused.stderr).split())
    assert " ".join(said[2].split()) in message


def test_the_docs_python_is_ruff_clean(tmp_path: Path) -> None:
    root = write_example(tmp_path)  # the package's modules (the notebook cell prints)
    ruff = str(Path(sys.executable).parent / "ruff")
    config = ("--config", str(ROOT / "pyproject.toml"))
    for check in (["check", *config, "."], ["format", *config, "--check", "."]):
        done = subprocess.run([ruff, *check], capture_output=True, text=True, cwd=root)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_docs_notebook_cell_runs_without_installing(tmp_path: Path) -> None:
    root = write_example(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", blocks()["notebook"]],
        capture_output=True,
        text=True,
        env=env_with(root / "my-tasks"),  # importable, not installed: no entry points
        cwd=root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, shape = done.stdout.splitlines()
    accuracy, feasible = first.split()
    assert 0.5 < float(accuracy) <= 1.0
    assert 0.0 <= float(feasible) <= 1.0
    assert shape == "(426,)"  # 569 tumours, a quarter held out


def test_the_docs_dockerfiles_pass_hadolint(tmp_path: Path) -> None:
    for name in ("Dockerfile.credit-worker", "Dockerfile.credit-service"):
        path = tmp_path / name
        path.write_text(blocks()[name])
        assert hadolint(path) == [], name
    # they install the example plugin from where it lies in the repository
    for line in blocks()["Dockerfile.credit-worker"].splitlines():
        if line.startswith("COPY "):
            assert (ROOT / line.split()[1]).is_dir()


def helm_values(block: str) -> dict[str, Any]:
    """The ``--set key=value`` pairs of a ``helm upgrade`` line as nested values."""
    values: dict[str, Any] = {}
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:4] == ["helm", "upgrade", "dualtune", "helm/dualtune"]
    for flag, pair in itertools.pairwise(words):
        if flag == "--set":
            key, _, value = pair.partition("=")
            *parents, leaf = key.split(".")
            node = values
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return values


def images(node: Any) -> list[str]:
    """Every container image in rendered manifests, in order."""
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for value in node.values() for i in images(value)]
    if isinstance(node, list):
        return [i for value in node for i in images(value)]
    return []


def test_the_docs_helm_upgrade_sets_the_chart_images() -> None:
    before = images(render().manifests)
    after = images(render(helm_values(blocks()["helm"])).manifests)
    ours = {
        "dualtune/worker": "registry.example.com/dualtune-credit-worker:0.1.0",
        "dualtune/service": "registry.example.com/dualtune-credit-service:0.1.0",
    }
    expected = [ours.get(image.rsplit(":", 1)[0], image) for image in before]
    assert after == expected
    # the Ray head, every worker group, the API and its migrations: all replaced
    assert sum(i.startswith("dualtune/worker:") for i in before) >= 2
    assert sum(i.startswith("dualtune/service:") for i in before) >= 2


def test_the_docs_runtime_pip_spec_is_valid_and_accepted(api: TestClient) -> None:
    doc = yaml.safe_load(blocks()["runtime_pip.yaml"])
    spec = dualtune.load_spec(doc)
    assert spec.count_trials() == 2  # erm, and fl at its one ε and dual lr
    assert spec.runtime.pip == [
        "--extra-index-url https://pypi.internal.example.com/simple",
        "dualtune-credit==0.1.0",
    ]
    created = api.post("/api/v1/sweeps", json={"spec": doc})
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["runtime"]["pip"] == spec.runtime.pip


def test_the_doc_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", DOC.read_text()):
        if "://" not in target:
            assert (DOC.parent / target).exists(), target
    assert os.path.isdir(ROOT / "examples" / "plugins" / "dualtune-credit")
