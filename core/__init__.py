"""dualtune's constrained-learning engine.

``core.spec`` and ``core.catalog`` are pure pydantic and import without torch, so the service
can validate specs without the training stack. The training entry points (``core.fit`` and
its result types) load torch lazily, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualtune.core.engine.errors import Diverged
    from dualtune.core.engine.fit import fit
    from dualtune.core.engine.result import EvalReport, TrialResult

__all__ = ["Diverged", "EvalReport", "TrialResult", "fit"]

_LAZY = {
    "fit": "dualtune.core.engine.fit",
    "TrialResult": "dualtune.core.engine.result",
    "EvalReport": "dualtune.core.engine.result",
    "Diverged": "dualtune.core.engine.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
