"""A driver the service refused stops: its Tuner first, the whole process if that is slow.

A refused token (``worker.service_link``) means the driver is a stray (its sweep was
relaunched, so another driver owns the Tune folder) or its sweep is over (cancelled,
finished): every epoch it trains on costs compute and may write into the other driver's
experiment. Two mechanisms stop it:

* ``StopWhenRefused``, the Tune stopper: Tune asks ``stop_all`` at every step of its loop
  (about ten times a second), so the Tuner stops its trials at once and ``fit`` returns.
  Tune pickles it with the experiment, so it holds only the sweep id and looks the live
  sink up (``worker.events.refusal``): a restored experiment gets it back.
* ``RefusalWatchdog``: Tune's stop waits for a trial's next report, and a trial that
  reports rarely (long epochs, a long evaluation) or an experiment restored from before the
  stopper existed would keep the driver alive. Once armed it gives the Tuner
  ``DUALTUNE_REFUSED_GRACE_S`` seconds, then leaves Ray, kills what is left of this
  process's children and exits with ``REFUSED`` (6).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from ray.tune import Stopper

from dualtune.worker.events import REFUSED, refusal
from dualtune.worker.process_exit import exit_process

log = logging.getLogger("dualtune.worker.refusal")
GRACE_S = float(os.environ.get("DUALTUNE_REFUSED_GRACE_S", "15"))


class StopWhenRefused(Stopper):
    """Stops every trial of sweep ``sweep_id`` once its sink was refused."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        del trial_id, result
        return False

    def stop_all(self) -> bool:
        return refusal(self.sweep_id) is not None


class RefusalWatchdog:
    """Ends the process ``grace_s`` after ``arm``, unless it ended first."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, reason: str) -> None:
        with self._lock:
            if self._timer is not None:
                return
            log.warning(
                "refused (%s): the Tuner has %.0f s to stop before the driver ends",
                reason,
                self.grace_s,
            )
            self._timer = threading.Timer(self.grace_s, self._fire)
            self._timer.name, self._timer.daemon = "dualtune-refusal-watchdog", True
            self._timer.start()

    def _fire(self) -> None:
        log.error("the Tuner did not stop in %.0f s: shutting Ray down, exiting", self.grace_s)
        exit_process(REFUSED)  # a refused driver has nothing to save
