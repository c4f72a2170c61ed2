"""Crash points in a unit's process (tests only), in the style of ``service.faults``.

``DUALTUNE_WORKER_CRASH_AT=POINT:EPOCH`` makes a unit's process exit at once (``os._exit``:
no clean-up, no atexit, no flush, as an OOM kill or a node loss would) when it reaches
``POINT`` at evaluation ``EPOCH``, once per unit: a marker file in the unit's folder stops
the retried process from crashing again. Unset (production), a crash point is one
dictionary lookup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

AFTER_LOG: Final = "after_log"
"""Every member's metrics of an evaluation are logged (sent to MLflow when the buffer
flushes at every evaluation); that evaluation's checkpoint is not saved yet."""

POINTS: Final = (AFTER_LOG,)
CRASH_ENV: Final = "DUALTUNE_WORKER_CRASH_AT"
CRASH_STATUS: Final = 77
"""The exit status of a crashed unit's process (recognisable in Ray's logs)."""


def crash_point(name: str, epoch: int, unit_dir: Path) -> None:
    """Exit this process if ``DUALTUNE_WORKER_CRASH_AT`` names ``name`` at ``epoch`` and this
    unit (``unit_dir``, which outlives its processes) has not crashed there before."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, at = wanted.partition(":")
    if point != name or (at and int(at) != epoch):
        return
    marker = unit_dir / f"crashed-{name}-{epoch}"
    if marker.exists():
        return
    unit_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os._exit(CRASH_STATUS)
