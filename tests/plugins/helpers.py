"""What the plugin tests share: specs on the example plugin's task, a broken plugin made at
test time (a site directory with a module that raises on import and its dist-info), and the
environment of a child process that sees it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
DUALTUNE = str(BIN / "dualtune")
"""The console script of this environment (``dualtune catalog``, ``dualtune run``)."""

CREDIT_SOURCE = "dualtune-credit 0.1.0"
BROKEN_DIST = "broken-plugin"
BROKEN_ERROR = "RuntimeError: broken_plugin cannot be imported (on purpose)"


def credit_spec(**overrides: Any) -> dict[str, Any]:
    """erm, fl and alm under group_fnr on sex, on the plugin's german_credit: 3 small trials."""
    doc: dict[str, Any] = {
        "name": "credit-fnr",
        "task": {"name": "german_credit", "params": {"model": "logistic"}},
        "constraint": {"kind": "group_fnr", "attribute": "sex"},
        "methods": ["erm", "fl", "alm"],
        "grid": {"epsilon": 0.02, "dual_lr": 0.2, "rho": 1.0, "seed": 0},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "logging": {"per_sample_every": 2},
    }
    doc.update(overrides)
    return doc


def write_broken_plugin(root: Path) -> Path:
    """``root`` as a site directory with an installed distribution, ``broken-plugin``, whose
    entry points name a task and a constraint kind in a module that raises on import."""
    info = root / "broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {BROKEN_DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dualtune.tasks]\nbroken_task = broken_plugin:TASK\n\n"
        "[dualtune.constraints]\nbroken_kind = broken_plugin:KIND\n"
    )
    (root / "broken_plugin.py").write_text(
        "raise RuntimeError('broken_plugin cannot be imported (on purpose)')\n"
    )
    return root


def env_with(*roots: Path, **extra: str) -> dict[str, str]:
    """This environment with ``roots`` first on the path, for a child process; wide output,
    so that tables are not cut."""
    paths = [*map(str, roots), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "COLUMNS": "250",
        "DUALTUNE_NUM_CPUS": "2",
        **extra,
    }
