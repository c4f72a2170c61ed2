"""A plugin distribution on disk for tests: one good task, one that fails to import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DIST = "dualtune-test-plugins"
GOOD_SOURCE = f"{DIST} 0.1 (rings_plugin:RINGS)"
BROKEN_SOURCE = f"{DIST} 0.1 (broken_plugin:INFO)"


def write_plugin_distribution(root: Path) -> Path:
    """``root`` as a site directory holding an installed distribution whose entry points
    register a task ``rings`` and a task ``broken`` whose module raises on import."""
    info = root / "dualtune_test_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dualtune.tasks]\nrings = rings_plugin:RINGS\nbroken = broken_plugin:INFO\n"
    )
    (root / "rings_plugin.py").write_text(
        "from dualtune import TaskInfo, TaskParams\n\n"
        "class RingsParams(TaskParams):\n"
        "    n_train: int = 256\n\n"
        "RINGS = TaskInfo('rings', 'two rings', 'classification', RingsParams,\n"
        "                 'rings_plugin_torch:Rings')\n"
    )
    (root / "broken_plugin.py").write_text(
        "raise ImportError('broken_plugin needs the rings extra')\n"
    )
    return root


def env_with(root: Path) -> dict[str, str]:
    """This environment with ``root`` on the path (first), for a child process."""
    paths = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "250"}


PYTHON = sys.executable
