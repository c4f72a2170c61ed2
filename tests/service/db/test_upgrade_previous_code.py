"""An upgrade never breaks the release before it: a server of the previous release's code
(taken from git history) keeps answering its API while this code migrates its database to
head and back again, on SQLite and on Postgres.

The previous release is the code as it last matched the previous revision: the parent of the
first commit that touched the rows or the migrations after that revision's file last
changed. (The commit just before the head revision's file is not always it: a row can be
declared a commit ahead of its migration, and that code runs on no schema at all.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dualtune.service.api.app import create_app
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import (
    MIGRATIONS,
    current_revision,
    downgrade,
    head_revision,
    known_revisions,
    upgrade,
)
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings
from tests.scratch_db import empty_database
from tests.service.api.helpers import auth, small_spec

ROOT = Path(__file__).resolve().parents[3]
PREVIOUS = known_revisions()[1]
SCHEMA_SIDE = ["service/db/rows.py", "service/db/migrations/versions"]

pytestmark = pytest.mark.timeout(300)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def previous_release() -> str:
    """The commit whose code is the previous release (see the module's docstring)."""
    if git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("a shallow clone has no history to take the previous release from")
    from dualtune.service.db.migrate import _script

    previous_file = Path(_script().get_revision(PREVIOUS).path).resolve()  # type: ignore[union-attr]
    last_change = git("log", "-1", "--format=%H", "--", str(previous_file.relative_to(ROOT)))
    if not last_change:
        pytest.skip(f"revision {PREVIOUS}'s file is not in this clone's history")
    after = git("log", "--reverse", "--format=%H", f"{last_change}..HEAD", "--", *SCHEMA_SIDE)
    return f"{after.split()[0]}^" if after else "HEAD"


def lay_out_package(commit: str, target: Path) -> Path:
    """``git archive`` of ``commit`` laid out as the installed package (its own
    pyproject's ``package-dir``: dualtune/, dualtune/core <- core/, ...)."""
    mapping = tomllib.loads(git("show", f"{commit}:pyproject.toml"))["tool"]["setuptools"][
        "package-dir"
    ]
    folders = sorted(set(mapping.values()))
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *folders],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    source = target / "source"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    tree = target / "tree"
    for name in sorted(mapping, key=lambda n: n.count(".")):  # dualtune before dualtune.core
        destination = tree.joinpath(*name.split("."))
        destination.parent.mkdir(parents=True, exist_ok=True)
        (source / mapping[name]).rename(destination)
    return tree


@dataclass
class OldServer:
    """A server of the previous release's code on a free port (fake launcher, no
    reconciler), and its CLI."""

    tree: Path
    url_of_db: str
    workdir: Path
    process: subprocess.Popen[str] | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)
    drain: threading.Thread = field(init=False)

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("DUALTUNE_")},
            "PYTHONPATH": str(self.tree),
            "DUALTUNE_DATABASE_URL": self.url_of_db,
            "DUALTUNE_DATA_DIR": str(self.workdir),
            "DUALTUNE_LAUNCHER": "fake",
            "DUALTUNE_TESTING": "1",
        }

    def python(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.workdir,  # not the repository: nothing of this code on sys.path
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def cli(self, *args: str) -> str:
        return self.python("-m", "dualtune.service.cli", *args)

    def start(self) -> None:
        # The socket listens before the port is printed: the first request waits in its
        # backlog until uvicorn accepts it (no polling, no race for a free port).
        script = (
            "import socket, uvicorn, dualtune.service\n"
            "from dualtune.service.api.app import create_app\n"
            "from dualtune.service.settings import Settings\n"
            "app = create_app(Settings(), reconcile=False)\n"
            "sock = socket.socket()\n"
            "sock.bind(('127.0.0.1', 0))\n"
            "sock.listen(128)\n"
            "print(dualtune.service.__file__, sock.getsockname()[1], flush=True)\n"
            "uvicorn.Server(uvicorn.Config(app, log_level='warning')).run(sockets=[sock])\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=self.workdir,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()
        assert len(first) == 2, f"the old server did not start: {first} {self.process.wait()}"
        imported, port = Path(first[0]), int(first[1])
        assert imported.is_relative_to(self.tree), f"imported {imported}, not the old code"
        self.url = f"http://127.0.0.1:{port}"

    def _drain(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        self.log.extend(self.process.stdout)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.drain.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


class Traffic:
    """Requests to the old server in a loop while the schema changes under it."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(base_url=url, headers=auth(token), timeout=30)
        self.stop = threading.Event()
        self.answers: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            created = self.client.post(
                "/api/v1/sweeps", json={"spec": small_spec(name=f"during-{n}")}
            )
            self.answers.append(("create", created.status_code))
            if created.status_code == 201:
                got = self.client.get(f"/api/v1/sweeps/{created.json()['id']}")
                self.answers.append(("get", got.status_code))
            listed = self.client.get("/api/v1/sweeps", params={"limit": 5})
            self.answers.append(("list", listed.status_code))
            n += 1
            self.stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.client.close()


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    commit = previous_release()
    tree = lay_out_package(git("rev-parse", commit), tmp_path_factory.mktemp("previous"))
    versions = tree / "dualtune" / "service" / "db" / "migrations" / "versions"
    assert not any(versions.glob(f"{head_revision()}_*.py")), "the old code has the new revision"
    assert MIGRATIONS.is_dir()
    return tree


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path, "dualtune_upg") as url:
        yield url


def names_listed(old: OldServer, token: str) -> set[str]:
    names: set[str] = set()
    cursor: str | None = None
    with httpx.Client(base_url=old.url, headers=auth(token), timeout=30) as client:
        while True:
            params: dict[str, str | int] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/v1/sweeps", params=params)
            assert page.status_code == 200, page.text
            names |= {item["name"] for item in page.json()["items"]}
            cursor = page.json()["next_cursor"]
            if not cursor:
                return names


def create_and_get(old: OldServer, token: str, name: str) -> None:
    with httpx.Client(base_url=old.url, headers=auth(token), timeout=30) as client:
        created = client.post("/api/v1/sweeps", json={"spec": small_spec(name=name)})
        assert created.status_code == 201, created.text
        got = client.get(f"/api/v1/sweeps/{created.json()['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["name"] == name


def test_the_previous_release_keeps_answering_through_upgrade_and_downgrade(
    old_tree: Path, empty_url: str, tmp_path: Path
) -> None:
    old = OldServer(old_tree, empty_url, tmp_path)
    assert f"revision {PREVIOUS} (was empty)" in old.cli("db", "upgrade")
    token = old.cli("token", "create", "--tenant", "alice").strip()
    engine = make_engine(empty_url)
    old.start()
    try:
        create_and_get(old, token, "before")

        with Traffic(old.url, token) as during_upgrade:
            upgrade(engine)
        assert current_revision(engine) == head_revision()
        create_and_get(old, token, "after-upgrade")
        # This code serves the same data, through its own queries, on the new schema.
        settings = Settings(data_dir=tmp_path, launcher="fake", testing=True)
        app = create_app(settings, FakeLauncher(), engine=engine, reconcile=False)
        with TestClient(app) as new:
            assert new.get("/readyz").status_code == 200
            listed = new.get("/api/v1/sweeps", headers=auth(token), params={"limit": 100})
            assert {"before", "after-upgrade"} <= {i["name"] for i in listed.json()["items"]}

        with Traffic(old.url, token) as during_downgrade:
            downgrade(engine, PREVIOUS)
        assert current_revision(engine) == PREVIOUS
        create_and_get(old, token, "after-downgrade")

        for traffic in (during_upgrade, during_downgrade):
            assert traffic.answers, "no request ran while the schema changed"
            assert {status for _, status in traffic.answers} <= {200, 201}, traffic.answers
        assert {"before", "after-upgrade", "after-downgrade"} <= names_listed(old, token)
    finally:
        old.stop()
        engine.dispose()
    assert "Traceback" not in "".join(old.log), "".join(old.log)
