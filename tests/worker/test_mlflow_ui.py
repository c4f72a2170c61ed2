"""A finished sweep, opened in MLflow's own UI in a real (headless Chromium) browser, reads at
a glance (ARCHITECTURE §3.5): the experiment opens on its runs table with the sweep's view
(grid params, the selection metric, the parent's ``best/*`` and trial counts), the parent
run expands to its children named by what they are, each with its metrics, and a child's
artifacts show its plots.

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``).
Without them the test skips, or fails where ``DUALTUNE_REQUIRE_BROWSER=1`` (CI sets it), so
a missing install step cannot hide behind a skip. ``DUALTUNE_SCREENSHOTS=docs/mlflow``
writes the screenshots docs/mlflow.md shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from dualtune.core.mlflow_links import VIEW_QUERY
from dualtune.core.spec import SweepSpec
from dualtune.worker.driver import SweepResult, run_sweep
from dualtune.worker.tracking.run_names import child_run_name
from tests.ports import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

REQUIRE_BROWSER = "DUALTUNE_REQUIRE_BROWSER"
SCREENSHOTS = "DUALTUNE_SCREENSHOTS"
SERVER_START_S = 180.0
"""``mlflow server`` imports for tens of seconds on a busy 2-core machine."""
PAGE_S = 120.0
"""The UI renders a page in seconds, but under a full `make test` on 2 cores the artifact
tree has taken over 60 s to fill in (CI, 2026-12-01)."""
RUN_NAME = "attributes.`Run Name`"
ASSISTANT_CLOSE = "button[data-component-id='mlflow.assistant.chat_panel.close']"

SPEC = SweepSpec.model_validate(
    {
        "name": "digits-at-a-glance",
        "task": {"name": "digits", "params": {"hidden": [32]}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "fl"],
        "grid": {"epsilon": [0.05, 0.2], "dual_lr": 0.01, "seed": 0},
        "train": {"epochs": 2, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}},
        "logging": {"per_sample_every": 2},
    }
)


def browser_binaries() -> tuple[str, str]:
    """Chromium and chromedriver; skips (or fails, under DUALTUNE_REQUIRE_BROWSER=1)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = (
            "Chromium or chromedriver not found on PATH: apt-get install chromium chromium-driver"
        )
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@dataclass(frozen=True)
class Sweep:
    result: SweepResult
    tracking_uri: str
    experiment_id: str


@pytest.fixture(scope="module")
def binaries() -> tuple[str, str]:
    return browser_binaries()


@pytest.fixture(scope="module")
def sweep(
    binaries: tuple[str, str], local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Sweep:
    """The finished sweep (asked for after ``binaries``: no browser, no minutes of sweep)."""
    root = tmp_path_factory.mktemp("glance")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    result = run_sweep(
        SPEC,
        sweep_id="glance",
        storage_path=root / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert {r.outcome.status for r in result.trials} == {"succeeded"}
    experiment = MlflowClient(tracking_uri).get_experiment_by_name(SPEC.name)
    assert experiment is not None
    return Sweep(result, tracking_uri, str(experiment.experiment_id))


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)  # a separate process starting: nothing to wait on but its port
    pytest.fail(f"mlflow server not healthy after {SERVER_START_S:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def mlflow_ui(sweep: Sweep, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free loopback port over the sweep's store, as a user runs it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("mlflow-server")
    log = workdir / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                sweep.tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn and job-runner children go with it
        )
    try:
        _wait_healthy(url, server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def browser(
    binaries: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDriver]:
    chromium, chromedriver = binaries
    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: WebDriver, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get(SCREENSHOTS) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / name))


def _wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, PAGE_S)


def _cell(driver: WebDriver, run_id: str, column: str) -> str:
    cells = driver.find_elements(
        By.CSS_SELECTOR, f"[role=row][row-id='{run_id}'] [role=gridcell][col-id='{column}']"
    )
    return " ".join(c.text for c in cells).strip()


def _shown(driver: WebDriver, run_id: str, column: str) -> str:
    """The cell's text once the table has rendered it (rows arrive after the headers)."""
    text: str = _wait(driver).until(lambda d: _cell(d, run_id, column) or False)
    return text


def _run_name(driver: WebDriver, run_id: str) -> str:
    """The name the Run Name cell shows (its text starts with the run's colour code)."""
    return _shown(driver, run_id, RUN_NAME).split("\n")[-1]


def _close_assistant(driver: WebDriver) -> None:
    """The MLflow Assistant panel opens beside every page and hides half the table. Clicked
    by script: a notification may lie over its button for a few seconds."""
    for button in driver.find_elements(By.CSS_SELECTOR, ASSISTANT_CLOSE):
        driver.execute_script("arguments[0].click()", button)


def test_the_runs_table_shows_the_children_by_name_and_the_parents_best(
    sweep: Sweep, mlflow_ui: str, browser: WebDriver, tmp_path: Path
) -> None:
    client = MlflowClient(sweep.tracking_uri)
    parent = client.get_run(str(sweep.result.parent_run_id))
    children = {
        r.data.tags["dualtune.trial_id"]: r
        for r in client.search_runs([sweep.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    trials = {t.trial_id: t for t in SPEC.trials()}
    assert set(children) == set(trials)

    browser.get(f"{mlflow_ui}/#/experiments/{sweep.experiment_id}/runs?{VIEW_QUERY}")
    # The sweep's view arrives as a shared view; keeping it is one click, as for a user.
    keep = (By.XPATH, "//button[normalize-space()='Override saved view']")
    _wait(browser).until(expected_conditions.element_to_be_clickable(keep)).click()
    _close_assistant(browser)
    best = "metrics.`best/val/loss_mean`"
    assert _run_name(browser, parent.info.run_id) == SPEC.name
    shown_best = _shown(browser, parent.info.run_id, best)
    assert float(shown_best) == pytest.approx(parent.data.metrics["best/val/loss_mean"])
    assert _shown(browser, parent.info.run_id, "metrics.`trials/total`") == str(len(trials))

    # The parent run folds its children; expanding it lists them by name, with metrics.
    browser.find_element(
        By.CSS_SELECTOR, f"[role=row][row-id='{parent.info.run_id}'] [col-id='{RUN_NAME}'] button"
    ).click()
    for child in children.values():
        shown_loss = _shown(browser, child.info.run_id, "metrics.`val/loss_mean`")
        assert float(shown_loss) == pytest.approx(child.data.metrics["val/loss_mean"])
    overridden = (By.XPATH, "//*[normalize-space()='Your saved view was overridden.']")
    _wait(browser).until(expected_conditions.invisibility_of_element_located(overridden))
    _screenshot(browser, "experiment.png", tmp_path)
    for trial_id, child in children.items():
        trial = trials[trial_id]
        assert _run_name(browser, child.info.run_id) == child_run_name(trial.method, trial.params)


def test_a_childs_artifacts_show_its_plots(
    sweep: Sweep, mlflow_ui: str, browser: WebDriver, tmp_path: Path
) -> None:
    client = MlflowClient(sweep.tracking_uri)
    parent = client.get_run(str(sweep.result.parent_run_id))
    # logging.plots: best: each method's best trial has figures; the sweep's best has them.
    best_trial = parent.data.tags["dualtune.best_trial_id"]
    (best,) = client.search_runs(
        [sweep.experiment_id], filter_string=f"tags.`dualtune.trial_id` = '{best_trial}'"
    )
    plots = {a.path for a in client.list_artifacts(best.info.run_id, "plots")}
    assert {"plots/loss_cdf.png", "plots/multipliers.png"} <= plots
    # Digits are images: the figures include the hardest samples.
    assert "plots/hardest.png" in plots
    # Shown for FL's best trial, whose multipliers point at the hard samples (ERM has none).
    (fl_entry,) = [m for m in sweep.result.report["methods"] if m["method"] == "fl"]
    fl_trial = (fl_entry["best"] or fl_entry["best_infeasible"])["trial_id"]
    (fl,) = client.search_runs(
        [sweep.experiment_id], filter_string=f"tags.`dualtune.trial_id` = '{fl_trial}'"
    )
    assert "plots/hardest.png" in {a.path for a in client.list_artifacts(fl.info.run_id, "plots")}
    browser.get(
        f"{mlflow_ui}/#/experiments/{sweep.experiment_id}/runs/{fl.info.run_id}"
        "/artifacts/plots/hardest.png?workflowType=machine_learning"
    )
    image = (By.CSS_SELECTOR, "img[src^='blob:'], img[src^='data:image/png']")
    _wait(browser).until(expected_conditions.visibility_of_element_located(image))
    _close_assistant(browser)
    wanted = {"per_sample", "plots", "hardest.png", "loss_cdf.png", "multipliers.png"}

    def tree(driver: WebDriver) -> set[str]:
        return set(driver.find_element(By.TAG_NAME, "body").text.split("\n"))

    # The artifact tree fills in after the image it opened on.
    _wait(browser).until(lambda driver: wanted <= tree(driver))
    assert wanted <= tree(browser)
    _screenshot(browser, "child_artifacts.png", tmp_path)
