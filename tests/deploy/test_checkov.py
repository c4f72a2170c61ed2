"""checkov (PyPI) finds nothing on the manifests the chart renders for every values profile;
the checks it skips are listed with their reasons in helm/dualtune/.checkov.yaml (chart-wide)
or in a `checkov.io/skip` annotation on the one resource they concern.

checkov is not a dev dependency: it brings ~95 wheels (54 MB: boto3, networkx, spdx-tools, ...)
with pins of its own, so it is installed once, with `pip install --target`, into a cache
outside the project's environment (DUALTUNE_CHECKOV_DIR, default
~/.cache/dualtune/checkov-<version>) and run as its own process on that path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.deploy.chart import CHART, PROFILES, render_profile

CHECKOV_VERSION = "3.3.30"
CONFIG = CHART / ".checkov.yaml"
PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
CHECKOV = [sys.executable, "-m", "checkov.main"]


def checkov_dir() -> Path:
    if configured := os.environ.get("DUALTUNE_CHECKOV_DIR"):
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "dualtune" / f"checkov-{CHECKOV_VERSION}"


def installed_checkov() -> Path:
    """The cache with checkov in it, installing it there first if need be (into a scratch
    folder moved into place, so two test processes never share a half-installed one)."""
    target = checkov_dir()
    if (target / "checkov" / "main.py").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        result = subprocess.run(
            [*PIP_INSTALL, "--target", str(scratch), f"checkov=={CHECKOV_VERSION}"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"checkov=={CHECKOV_VERSION} could not be installed: {last}")
        with contextlib.suppress(OSError):  # another process got there first
            scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def run_checkov(folder: Path) -> list[dict]:
    environment = {**os.environ, "PYTHONPATH": str(installed_checkov())}
    result = subprocess.run(
        [*CHECKOV, "--config-file", str(CONFIG), "--directory", str(folder), "--output", "json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def test_checkov_finds_nothing_in_any_profile(tmp_path: Path) -> None:
    for profile in PROFILES:
        manifests = render_profile(profile).manifests
        (tmp_path / f"{profile}.yaml").write_text(yaml.safe_dump_all(manifests))

    (report,) = run_checkov(tmp_path)

    failed = [
        f"{check['check_id']} {check['check_name']}: {check['file_path']} {check['resource']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["passed"] > 0
    assert report["summary"]["parsing_errors"] == 0


def test_checkov_would_fail_an_unprivileged_container_gone_privileged(tmp_path: Path) -> None:
    """The run is live: a manifest that breaks a check is reported."""
    (deployment, *_) = render_profile("default").of_kind("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))

    (report,) = run_checkov(tmp_path)

    assert "CKV_K8S_16" in {check["check_id"] for check in report["results"]["failed_checks"]}


def test_every_chart_wide_skip_has_a_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]

    assert skips
    for check in skips:
        (at,) = [i for i, line in enumerate(lines) if line.strip() == f"- {check}"]
        assert lines[at - 1].strip().startswith("#"), f"{check} is skipped without a reason"
