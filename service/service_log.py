"""The service's own log: ``dualtune.*`` at INFO on stderr (launches, adoptions, strays
stopped, sweeps closed, one sweep's errors), where containers and ``up``'s log file collect
it. Set up by ``serve``/``up`` and by each ``--workers`` process, never at import."""

from __future__ import annotations

import logging


def log_to_stderr(level: int = logging.INFO) -> None:
    service_log = logging.getLogger("dualtune")
    if not service_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        service_log.addHandler(handler)
    service_log.setLevel(level)
