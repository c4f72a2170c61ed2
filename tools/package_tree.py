"""Lay out ``build/package/dualtune/`` as the installed package looks, for static tools.

The repository keeps ``core/``, ``worker/`` and ``service/`` at its top level and setuptools
installs them inside ``dualtune`` (``package-dir`` in pyproject.toml). Python finds them
through the editable install's import hook, but mypy and import-linter read the file system
and follow no hooks: they get this tree instead, real folders holding hard links to the
source files (import-linter follows symbolic links back to the source folders and loses the
package's name). ``make lint`` rebuilds it every time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "package"


def package_dirs() -> dict[str, Path]:
    """The ``package-dir`` mapping of pyproject.toml: import name → source folder."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def build(tree: Path = TREE) -> Path:
    shutil.rmtree(tree, ignore_errors=True)
    for name, source in package_dirs().items():
        target = tree.joinpath(*name.split("."))
        for path in sorted(source.rglob("*")):
            if "__pycache__" in path.parts or path.is_dir():
                continue
            relative = path.relative_to(source)
            # A nested package (dualtune.core inside dualtune) has its own mapping.
            if name == "dualtune" and relative.parts[0] in {"core", "worker", "service"}:
                continue
            link = target / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, link)
            except OSError:  # another file system: a copy does as well for one lint run
                shutil.copy2(path, link)
    return tree


if __name__ == "__main__":
    print(build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else TREE))
