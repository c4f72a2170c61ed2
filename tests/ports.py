"""Ports for the servers the tests start (Ray heads and their agents, MLflow, the service).

A port the kernel hands out for ``bind(("", 0))`` comes from its ephemeral range, the range
every outgoing connection of every process also draws from: between a test choosing it
and its server binding it, another process's connection may take it (seen in CI: a Ray
dashboard agent that could not bind its gRPC port, with both test workers starting Ray
clusters). ``free_port`` chooses below that range instead (and above Ray's worker ports),
where only a deliberate bind can take a port, and checks that the port is free now.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20_000
"""Above Ray's own default ranges: its client server's 10001 and its workers' 10002–19999."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux's default where it cannot be read)."""
    try:
        low, high = (int(p) for p in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999
    return low, high


def _bindable(port: int) -> bool:
    for host in ("0.0.0.0", "127.0.0.1"):  # Ray's agents bind every address
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


_HANDED_OUT: set[int] = set()
"""Ports this process has handed out: a port chosen for a server that has not bound it yet
is still free, so without this two picks in a row could return it twice (seen in CI: a Ray
head given the same port for its runtime-env agent and its metrics export)."""


def free_port() -> int:
    """A TCP port free on every address now, outside the ephemeral range, and not handed
    out by this process before."""
    low, high = ephemeral_range()
    start, end = (LOWEST, low) if low - LOWEST >= 1_000 else (high + 1, 65_536)
    for _ in range(500):
        port = random.randrange(start, end)
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # nothing free out there: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
