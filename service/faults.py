"""Crash points: where the fault-injection campaign SIGKILLs the service (tests only).

Each point sits where a launch, the events or a finish can be cut between two durable steps.
``DUALTUNE_CRASH_AT=POINT`` (or ``POINT:N``, the N-th time the point is reached) makes the
service kill itself there with SIGKILL, as an OOM kill or a node loss would: no clean-up,
no atexit. Unset (production), a crash point is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

LAUNCH_RECORDED: Final = "launch.recorded"
"""The launch (its submission id and worker token) is committed; the driver not started."""
LAUNCH_STARTED: Final = "launch.started"
"""The launcher started the driver; the database does not know its reference yet."""
EVENTS_APPLIED: Final = "events.applied"
"""A batch of trial events is committed; the driver has not had the answer."""
FINISH_BEGUN: Final = "finish.begun"
"""The driver has ended and the sweep is about to be closed; nothing of it committed."""

POINTS: Final = (LAUNCH_RECORDED, LAUNCH_STARTED, EVENTS_APPLIED, FINISH_BEGUN)
CRASH_ENV: Final = "DUALTUNE_CRASH_AT"

_hits: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process if ``DUALTUNE_CRASH_AT`` names ``name`` (and this is its N-th hit)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        hit = _hits[name]
    if hit == (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
