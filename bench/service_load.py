"""P4: the service under load. 50 concurrent clients submit and read sweeps against a real
``dualtune serve`` process (uvicorn, one worker), on SQLite (WAL) and on Postgres; then a
sweep of 10 000 trials is read. Targets: p99 ≤ 50 ms with no errors; listing a sweep of
10 000 trials ≤ 100 ms.

    python -m bench.service_load [--clients 50] [--requests 40] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.service.stack import free_port

SMALL = {
    "name": "load",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["erm", "fl"],
    "grid": {"epsilon": [0.1, 0.3], "dual_lr": [0.01, 0.1]},
}
LARGE = {
    "name": "ten-thousand",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["fl"],
    "grid": {
        "epsilon": [round(0.01 * (i + 1), 3) for i in range(100)],
        "dual_lr": [round(0.001 * (i + 1), 4) for i in range(100)],
    },
    "limits": {"max_trials": 10000},
}


def _cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dualtune.service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class Server:
    def __init__(self, database_url: str, data_dir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DUALTUNE_DATABASE_URL": database_url,
            "DUALTUNE_DATA_DIR": str(data_dir),
            "DUALTUNE_LAUNCHER": "fake",
            "DUALTUNE_TESTING": "1",  # the fake launcher is refused otherwise
            "DUALTUNE_PORT": str(self.port),
        }
        _cli("db", "upgrade", env=self.env)
        self.token = _cli("token", "create", "--tenant", "bench", env=self.env).split()[-1]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dualtune.service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--workers",
                str(workers),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the service did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _client(
    http: httpx.AsyncClient,
    n: int,
    ids: list[str],
    latencies: list[float],
    errors: list[str],
    interval_s: float,
) -> None:
    """``n`` requests; back to back (``interval_s`` 0: saturation), or one every
    ``interval_s`` from a random phase (a client polling, as ``submit --wait`` does)."""
    rng = random.Random()
    start = time.perf_counter() + rng.random() * interval_s
    for k in range(n):
        if interval_s:
            await asyncio.sleep(max(0.0, start + k * interval_s - time.perf_counter()))
        roll = rng.random()
        started = time.perf_counter()
        if roll < 0.2 or not ids:
            response = await http.post("/api/v1/sweeps", json={"spec": SMALL})
            if response.status_code == 201:
                ids.append(response.json()["id"])
        elif roll < 0.5:
            response = await http.get("/api/v1/sweeps", params={"limit": 20})
        elif roll < 0.8:
            response = await http.get(f"/api/v1/sweeps/{rng.choice(ids)}")
        else:
            response = await http.get(f"/api/v1/sweeps/{rng.choice(ids)}/trials")
        latencies.append(time.perf_counter() - started)
        if response.status_code >= 400:
            errors.append(f"{response.status_code} {response.text[:100]}")


async def _load(
    server: Server, clients: int, requests: int, interval_s: float = 0.0
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    ids: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=60,
        limits=limits,
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(
            *(_client(http, requests, ids, latencies, errors, interval_s) for _ in range(clients))
        )
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "throughput_rps": len(latencies) / wall,
    }


def _large(server: Server) -> dict[str, float]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=300
    ) as http:
        started = time.perf_counter()
        response = http.post("/api/v1/sweeps", json={"spec": LARGE})
        submit_s = time.perf_counter() - started
        response.raise_for_status()
        sweep_id = response.json()["id"]
        assert response.json()["total_trials"] == 10000

        def median_ms(path: str, **params: Any) -> float:
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                http.get(path, params=params).raise_for_status()
                times.append(time.perf_counter() - t0)
            return 1000 * statistics.median(times)

        return {
            "submit_s": submit_s,
            "get_ms": median_ms(f"/api/v1/sweeps/{sweep_id}"),
            "trials_100_ms": median_ms(f"/api/v1/sweeps/{sweep_id}/trials", limit=100),
            "trials_1000_ms": median_ms(f"/api/v1/sweeps/{sweep_id}/trials", limit=1000),
        }


def _postgres_database(server_url: str) -> tuple[str, Any]:
    admin = create_engine(
        server_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    name = f"dualtune_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server_url.rsplit("/", 1)[0] + f"/{name}", drop


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a paced client's requests"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "clients": args.clients,
        "per_client": args.requests,
        "interval": args.interval,
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory() as tmp:
        pg_url, drop = _postgres_database(args.postgres)
        backends = {"SQLite (WAL)": f"sqlite:///{tmp}/dualtune.db", "Postgres 15": pg_url}
        try:
            for label, url in backends.items():
                server = Server(url, Path(tmp), args.workers)
                try:
                    paced = asyncio.run(_load(server, args.clients, args.requests, args.interval))
                    load = asyncio.run(_load(server, args.clients, args.requests))
                    large = _large(server)
                finally:
                    server.stop()
                results[label] = {"paced": paced, "load": load, "large": large}
                print(label, paced, load, large, flush=True)
        finally:
            drop()
    return results


def render(results: dict[str, Any]) -> list[str]:
    lines = [
        "## P4: the service under load (`bench/service_load.py`)",
        "",
        f"{results['clients']} concurrent clients × {results['per_client']} requests each "
        "(20 % submit a 5-trial sweep, 30 % list 20 sweeps, 30 % read a sweep, 20 % list its "
        f"trials) against `dualtune serve` ({results['workers']} uvicorn worker(s), fake "
        "launcher) on the same 2-core machine as the clients. **Paced**: each client sends a "
        f"request every {results['interval']:g} s from a random phase (clients polling, as "
        "`submit --wait` does). **Saturated**: each client sends its next request as soon as "
        "the last one is answered. Then a sweep of 10 000 trials: submit it, read it "
        "(median of 15).",
        "",
        "| database | load | requests | errors | p50 ms | p99 ms | req/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in ("SQLite (WAL)", "Postgres 15"):
        for kind, name in (("paced", "paced"), ("load", "saturated")):
            r = results[label][kind]
            lines.append(
                f"| {label} | {name} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['throughput_rps']:.0f} |"
            )
    lines += [
        "",
        "| database | submit 10k trials (s) | GET sweep (ms) | trials page of 100 (ms) "
        "| trials page of 1000 (ms) |",
        "|---|---|---|---|---|",
    ]
    for label in ("SQLite (WAL)", "Postgres 15"):
        large = results[label]["large"]
        lines.append(
            f"| {label} | {large['submit_s']:.2f} | {large['get_ms']:.1f} | "
            f"{large['trials_100_ms']:.1f} | {large['trials_1000_ms']:.1f} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(render(main())))
