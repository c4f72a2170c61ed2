"""The ``dualtune`` command line on specs: clear messages, exit codes, no stack traces."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualtune.core.catalog import plugin_errors
from dualtune.service.cli import app
from tests.service.plugins import BROKEN_SOURCE, GOOD_SOURCE, env_with, write_plugin_distribution

runner = CliRunner()


def test_validate_lists_the_method_aware_expansion() -> None:
    result = runner.invoke(app, ["validate", "examples/fl_vs_erm.yaml"])
    assert result.exit_code == 0, result.output
    assert "13 trials" in result.output
    assert "per method: erm 1, fl 4, rfl 8" in result.output


def test_an_invalid_spec_names_the_field_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ntask: {name: two_moons}\nconstraint: {kind: sample_loss}\nmethods: [fl, sal]\n"
    )
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, str(spec)])
        assert result.exit_code == 2
        assert "methods.1: method 'sal' does not apply to constraint kind" in result.output
        assert "Traceback" not in result.output


def test_a_missing_spec_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_catalog_lists_tasks_methods_and_kinds() -> None:
    result = runner.invoke(app, ["catalog"])
    assert result.exit_code == 0
    for name in ("two_moons", "iris_svm", "rfl", "sal", "group_rate", "orthogonality"):
        assert name in result.output


def test_catalog_shows_sources_and_failed_plugins_only_when_there_are_plugins() -> None:
    result = runner.invoke(app, ["catalog"])
    assert result.exit_code == 0
    assert ("plugins that failed to load" in result.output) == bool(plugin_errors())


def test_catalog_lists_each_plugins_source_and_the_plugins_that_failed_to_load(
    tmp_path: Path,
) -> None:
    site = write_plugin_distribution(tmp_path / "site")
    done = subprocess.run(
        [sys.executable, "-m", "dualtune.service.cli", "catalog"],
        env=env_with(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    tables, failed = done.stdout.split("plugins that failed to load", 1)
    for name in ("two_moons", "rings", "sample_loss", "rfl"):  # everything else still works
        assert name in tables
    plugged = tables.split("from plugins", 1)[1]
    assert GOOD_SOURCE in plugged  # the working plugin's task, with where it comes from
    assert "dualtune.tasks" in plugged
    assert "two_moons" not in plugged
    assert "dualtune.tasks" in failed
    assert BROKEN_SOURCE in failed
    assert "ImportError: broken_plugin needs the rings extra" in failed


def test_catalog_marks_required_task_parameters() -> None:
    result = runner.invoke(app, ["catalog"], terminal_width=200)
    assert result.exit_code == 0
    assert "data_dir (required)" in result.output  # cifar10: the user's own copy
    assert "Undefined" not in result.output


def test_the_worker_entry_point_rejects_a_bad_spec_before_starting_ray(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ntask: {name: mnist}\nconstraint: {kind: sample_loss}\n")
    done = subprocess.run(
        [sys.executable, "-m", "dualtune.worker", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "task.name: unknown task 'mnist'" in done.stderr
    assert "methods: Field required" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("path", sorted(Path("examples").glob("*.yaml")))
def test_every_example_validates(path: Path) -> None:
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
