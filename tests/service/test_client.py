"""``dualtune.Client`` against the real app (uvicorn on loopback, fake launcher): typed
answers, one error type with the status and field errors, specs checked before any request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from rich.console import Console
from sqlalchemy import Engine

from dualtune.core.spec import SpecError, SweepSpec
from dualtune.service.api.app import create_app
from dualtune.service.api.schemas import (
    CatalogPublic,
    ReportPublic,
    SweepPage,
    SweepPublic,
    TrialPublic,
)
from dualtune.service.auth import new_tenant_token
from dualtune.service.cli.views import print_report
from dualtune.service.client import Client, ClientError, default_token, default_url
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.reconciler import Reconciler
from dualtune.service.settings import Settings
from tests.ports import free_port
from tests.service.api.helpers import small_spec
from tests.service.plugins import BROKEN_SOURCE, GOOD_SOURCE, env_with, write_plugin_distribution
from tests.service.stack import ThreadedServer


class Service:
    """The app on a loopback port with a tenant's token, its fake launcher and reconciler."""

    def __init__(self, server: ThreadedServer, token: str, launcher: FakeLauncher, app: Any):
        self.url = f"http://127.0.0.1:{server.port}"
        self.token = token
        self.launcher = launcher
        self.reconciler: Reconciler = app.state.reconciler

    def client(self, **kw: Any) -> Client:
        return Client(self.url, self.token, **kw)

    def finish(self, sweep_id: str) -> None:
        """Launch the sweep, report every trial succeeded as its driver would, end it."""
        self.reconciler.step()
        (driver,) = self.launcher.for_sweep(sweep_id)
        headers = {"Authorization": f"Bearer {driver.request.worker_token}"}
        base = f"{self.url}/api/v1/worker/sweeps/{sweep_id}"
        view = httpx.get(base, headers=headers).json()
        events = [
            {
                "trial_id": trial_id,
                "status": "succeeded",
                "attempt": 1,
                "metrics": {"train/cvar_0.1": 1.0 / (i + 1), "val/loss_mean": 0.5},
                "mlflow_run_id": f"run{i}",
            }
            for i, trial_id in enumerate(view["run_trial_ids"])
        ]
        body = {"generation": 0, "events": events, "mlflow_parent_run_id": "parent"}
        assert httpx.post(f"{base}/events", json=body, headers=headers).status_code == 200
        self.launcher.exit(sweep_id)
        self.reconciler.step()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dualtune.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def service(tmp_path: Path, engine: Engine) -> Iterator[Service]:
    token = new_tenant_token()
    Repository(engine).create_token("alice", token)
    launcher = FakeLauncher()
    app = create_app(
        Settings(
            data_dir=tmp_path, launcher="fake", testing=True, service_url="http://service.test"
        ),
        launcher,
        engine=engine,
        reconcile=False,
    )
    server = ThreadedServer(app, free_port())
    server.start()
    yield Service(server, token, launcher, app)
    server.stop()


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with service.client() as c:
        yield c


def test_submit_get_trials_cancel_retry_and_report_return_the_api_models(
    client: Client,
) -> None:
    sweep = client.submit(small_spec())
    assert isinstance(sweep, SweepPublic)
    assert sweep.id.startswith("sw-")
    assert (sweep.status, sweep.total_trials) == ("pending", 5)

    got = client.get(sweep.id)
    assert isinstance(got, SweepPublic)
    assert got.spec["name"] == "moons-fl"
    trials = client.trials(sweep.id)
    assert all(isinstance(t, TrialPublic) for t in trials)
    assert [t.position for t in trials] == list(range(5))
    assert {t.method for t in trials} == {"erm", "fl"}
    assert client.trials(sweep.id, status="succeeded") == []
    page = client.sweeps()
    assert isinstance(page, SweepPage)
    assert [s.id for s in page.items] == [sweep.id]

    cancelled = client.cancel(sweep.id)
    assert cancelled.status == "cancelled"
    assert client.cancel(sweep.id).status == "cancelled"  # idempotent
    assert client.wait(sweep.id).status == "cancelled"
    retried = client.retry(sweep.id)
    assert retried.status == "pending"

    report = client.report(sweep.id)
    assert isinstance(report, ReportPublic)
    assert [m.method for m in report.methods] == ["erm", "fl"]
    assert all(m.best is None for m in report.methods)
    assert report.selection.metric == "val/loss_mean"


def test_wait_returns_the_final_sweep_and_the_report_names_each_methods_best(
    service: Service, client: Client
) -> None:
    sweep = client.submit(small_spec())
    service.finish(sweep.id)
    seen: list[SweepPublic] = []
    final = client.wait(sweep.id, seen.append)
    assert final.status == "succeeded"
    assert seen == [final]
    assert final.trial_counts == {"succeeded": 5}
    assert final.best_trial is not None
    report = client.report(sweep.id)
    assert report.status == "succeeded"
    assert report.mlflow_parent_run_id == "parent"
    best = {m.method: m.best for m in report.methods}
    assert best["erm"] is not None
    assert best["fl"] is not None
    assert best["fl"].mlflow_run_id is not None
    assert best["fl"].mlflow_run_id.startswith("run")
    assert "train/cvar_0.1" in best["fl"].metrics
    assert "train/cvar_0.1" in {m for entry in report.methods for m in entry.vs_erm}
    assert client.trials(sweep.id, status="succeeded")[0].mlflow_run_id == "run0"
    assert "fake driver" in client.logs(sweep.id)


def test_the_report_serves_each_methods_pareto_front_and_the_cli_prints_it(
    service: Service, client: Client
) -> None:
    # finish() gives trial i train/cvar_0.1 = 1/(i+1) and every trial val/loss_mean 0.5:
    # among fl's four, the lowest CVaR dominates the others.
    bounded = small_spec(selection={"subject_to": {"train/cvar_0.1": {"max": 0.6}}})
    sweep = client.submit(bounded)
    service.finish(sweep.id)
    report = client.report(sweep.id)
    assert report.pareto is not None
    x, y = report.pareto.x, report.pareto.y
    assert (x.metric, x.direction, y.metric, y.mode) == (
        "train/cvar_0.1",
        "min",
        "val/loss_mean",
        "min",
    )
    assert x.bound is not None
    assert (x.bound.min, x.bound.max) == (None, 0.6)
    erm, fl = report.pareto.methods
    assert [p.trial_id for p in erm.points] == erm.front
    assert len(fl.points) == 4
    lowest = min(fl.points, key=lambda p: p.x)
    assert fl.front == [lowest.trial_id]
    assert lowest.x == pytest.approx(0.2)
    assert lowest.params["epsilon"] in (0.1, 0.3)
    # The same body as the route's JSON, parsed back to the same model.
    raw = httpx.get(
        f"{service.url}/api/v1/sweeps/{sweep.id}/report",
        headers={"Authorization": f"Bearer {service.token}"},
    ).json()
    assert ReportPublic.model_validate(raw) == report
    assert raw["pareto"]["methods"][1]["front"] == [lowest.trial_id]

    console = Console(record=True, width=200)
    print_report(report, console)
    fronts = console.export_text().split("Pareto fronts", 1)[1]
    assert "train/cvar_0.1 (lower is better)" in fronts
    assert lowest.trial_id in fronts
    assert "0.2" in fronts


class Unanswered(httpx.BaseTransport):
    """Refuses the first ``failures`` connections, then passes requests to the network."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return self.network.handle_request(request)

    def close(self) -> None:
        self.network.close()


def test_wait_waits_out_a_service_that_does_not_answer_for_a_while(
    service: Service, client: Client
) -> None:
    sweep = client.submit(small_spec())
    client.cancel(sweep.id)
    flaky = Unanswered(failures=3)
    with service.client(transport=flaky) as restarting:
        assert restarting.wait(sweep.id, interval_s=0.01).status == "cancelled"
    assert flaky.failures == 0


def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    sweep = client.submit(small_spec())
    seen: list[str] = []
    with pytest.raises(ClientError, match=r"did not finish in 0\.05 s") as late:
        client.wait(sweep.id, lambda s: seen.append(s.status), interval_s=0.01, timeout_s=0.05)
    assert not late.value.unreachable
    assert seen
    assert set(seen) == {"pending"}


@pytest.mark.parametrize("form", ["model", "mapping", "yaml text", "json text", "path", "str"])
def test_submit_takes_a_spec_its_mapping_its_text_or_its_file(
    client: Client, tmp_path: Path, form: str
) -> None:
    doc = small_spec(name=f"form-{form.replace(' ', '-')}")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    spec: Any = {
        "model": SweepSpec.model_validate(doc),
        "mapping": doc,
        "yaml text": yaml.safe_dump(doc),
        "json text": json.dumps(doc, indent=1),
        "path": path,
        "str": str(path),
    }[form]
    sweep = client.submit(spec)
    assert sweep.name == doc["name"]
    assert sweep.total_trials == 5


def test_a_bad_spec_is_a_spec_error_before_any_request() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500)

    with Client("http://nowhere.test", "dt_x", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(SpecError) as bad:
            c.submit(small_spec(methods=["fl", "nope"]))
        assert [e["field"] for e in bad.value.errors] == ["methods.1"]
        with pytest.raises(SpecError, match="cannot read"):
            c.submit(Path("no/such/spec.yaml"))
        with pytest.raises(SpecError):
            c.submit("name: [unclosed\n")
    assert requests == []


def test_a_422_from_the_service_carries_its_field_errors(client: Client) -> None:
    with pytest.raises(ClientError) as too_long:
        client.submit(small_spec(), idempotency_key="k" * 201)
    assert too_long.value.status == 422
    assert [e["field"] for e in too_long.value.errors] == ["Idempotency-Key"]
    assert "Idempotency-Key" in str(too_long.value)
    sweep = client.submit(small_spec())
    with pytest.raises(ClientError) as bad_filter:
        client.trials(sweep.id, status="nope")  # type: ignore[arg-type]
    assert bad_filter.value.status == 422
    assert [e["field"] for e in bad_filter.value.errors] == ["status"]
    assert str(bad_filter.value).startswith("422: ")
    assert "status" in str(bad_filter.value)


def test_the_message_lists_every_field_of_a_422() -> None:
    body = {
        "detail": "invalid sweep spec: spec.name: too long; spec.grid.epsilon: below 0",
        "errors": [
            {"field": "spec.name", "message": "too long"},
            {"field": "spec.grid.epsilon", "message": "below 0"},
        ],
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(422, json=body))
    with (
        Client("http://svc.test", "dt_x", transport=transport) as c,
        pytest.raises(ClientError) as e,
    ):
        c.get("sw-1")
    assert e.value.errors == body["errors"]
    assert e.value.detail == body["detail"]
    assert str(e.value).splitlines()[1:] == [
        "  spec.name: too long",
        "  spec.grid.epsilon: below 0",
    ]


def test_an_idempotency_key_returns_the_same_sweep_and_refuses_another_spec(
    client: Client,
) -> None:
    first = client.submit(small_spec(), idempotency_key="nightly-1")
    again = client.submit(small_spec(), idempotency_key="nightly-1")
    assert again.id == first.id
    with pytest.raises(ClientError) as other:
        client.submit(small_spec(name="other"), idempotency_key="nightly-1")
    assert other.value.status == 409
    assert client.submit(small_spec(), idempotency_key="nightly-2").id != first.id


def test_refusals_carry_the_status_and_the_services_message(
    service: Service, client: Client
) -> None:
    with pytest.raises(ClientError) as missing:
        client.get("sw-000000000000")
    assert missing.value.status == 404
    assert str(missing.value).startswith("404: ")
    assert not missing.value.unreachable
    with Client(service.url, "dt_not-a-token") as stranger, pytest.raises(ClientError) as denied:
        stranger.sweeps()
    assert denied.value.status == 401


def test_an_answer_that_is_not_json_or_not_the_model_is_a_client_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        return httpx.Response(200, json={"id": "sw-1"})

    with Client("http://svc.test", "dt_x", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(ClientError) as gateway:
            c.report("sw-1")
        assert gateway.value.status == 502
        assert "Bad Gateway" in str(gateway.value)
        with pytest.raises(ClientError, match="not a SweepPublic"):
            c.get("sw-1")


def test_an_unreachable_service_is_explained() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "dt_x") as nobody:
        assert nobody.ready() is False
        with pytest.raises(ClientError) as unreachable:
            nobody.submit(small_spec())
    assert unreachable.value.unreachable
    assert unreachable.value.status is None
    message = str(unreachable.value)
    assert f"cannot reach the dualtune service at {url}" in message
    assert "dualtune up" in message
    assert "DUALTUNE_URL" in message


def test_url_and_token_default_as_the_clis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DUALTUNE_URL", raising=False)
    monkeypatch.delenv("DUALTUNE_TOKEN", raising=False)
    monkeypatch.setenv("DUALTUNE_DATA_DIR", str(tmp_path))
    assert default_url() == "http://127.0.0.1:8000"
    assert default_token() is None
    (tmp_path / "token").write_text("dt_from-file\n")
    with Client() as c:
        assert (c.url, c.token) == ("http://127.0.0.1:8000", "dt_from-file")
    monkeypatch.setenv("DUALTUNE_URL", "http://svc.test:9000/")
    monkeypatch.setenv("DUALTUNE_TOKEN", "dt_from-env")
    with Client() as c:
        assert (c.url, c.token) == ("http://svc.test:9000", "dt_from-env")
    with Client("http://other.test", "dt_given") as c:
        assert (c.url, c.token) == ("http://other.test", "dt_given")
        assert repr(c) == "dualtune.Client('http://other.test')"


def test_the_client_is_closed_by_its_context(service: Service) -> None:
    with service.client() as c:
        assert c.ready() is True
    assert c._http.is_closed


def test_the_catalog_is_typed_with_each_entrys_source(client: Client) -> None:
    catalog = client.catalog()
    assert isinstance(catalog, CatalogPublic)
    tasks = {t.name: t for t in catalog.tasks}
    assert tasks["two_moons"].source.startswith("dualtune ")
    assert "builtin_tasks:TWO_MOONS" in tasks["two_moons"].source
    assert "hidden" in tasks["two_moons"].parameters["properties"]
    kinds = {k.name: k for k in catalog.constraint_kinds}
    assert "builtin_constraints:SAMPLE_LOSS" in kinds["sample_loss"].source
    assert isinstance(catalog.plugin_errors, list)


CATALOG_OVER_HTTP = """
import sys, tempfile
from pathlib import Path
from dualtune.service.api.app import create_app
from dualtune.service.client import Client
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import upgrade
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings
from tests.service.stack import ThreadedServer, free_port

data = Path(tempfile.mkdtemp())
engine = make_engine(f"sqlite:///{data / 'dualtune.db'}")
upgrade(engine)
Repository(engine).create_token("alice", "dt_plugin-test")
app = create_app(Settings(data_dir=data, launcher="fake", testing=True), FakeLauncher(),
                 engine=engine, reconcile=False)
server = ThreadedServer(app, free_port())
server.start()
with Client(f"http://127.0.0.1:{server.port}", "dt_plugin-test") as client:
    sys.stdout.write(client.catalog().model_dump_json())
server.stop()
"""


def test_get_catalog_lists_a_plugin_that_failed_to_load_and_everything_else_works(
    tmp_path: Path,
) -> None:
    site = write_plugin_distribution(tmp_path / "site")
    done = subprocess.run(
        [sys.executable, "-c", CATALOG_OVER_HTTP],
        env=env_with(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    catalog = CatalogPublic.model_validate_json(done.stdout)
    tasks = {t.name: t for t in catalog.tasks}
    assert tasks["rings"].source == GOOD_SOURCE
    assert tasks["rings"].parameters["properties"]["n_train"]["default"] == 256
    assert "two_moons" in tasks
    assert "broken" not in tasks
    (broken,) = [e for e in catalog.plugin_errors if e.name == "broken"]
    assert (broken.group, broken.source) == ("dualtune.tasks", BROKEN_SOURCE)
    assert broken.error == "failed to import: ImportError: broken_plugin needs the rings extra"


def test_importing_the_client_imports_no_training_stack_nor_server_frameworks() -> None:
    check = (
        "import dualtune, sys; dualtune.Client; "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules "
        "and 'mlflow' not in sys.modules, 'training stack imported'; "
        "heavy = [m for m in ('fastapi', 'sqlalchemy', 'starlette') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
