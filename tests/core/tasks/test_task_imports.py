"""Building a task does not import what only loading its data needs: a sweep's driver plans
its units from the tasks (``worker.packing``) and never loads their data, so sklearn's
second or more of imports would be on its path for nothing."""

import subprocess
import sys

from dualtune.core.catalog import TASKS

SKLEARN_TASKS = ("digits", "two_moons", "iris_svm", "compas", "cps_wages")


def test_building_the_builtin_tasks_does_not_import_sklearn() -> None:
    assert set(SKLEARN_TASKS) <= set(TASKS)  # the tasks whose loaders use sklearn
    script = (
        "import sys\n"
        "from dualtune.core.tasks import load_task\n"
        f"for name in {SKLEARN_TASKS!r}:\n"
        "    load_task(name, {}).pack_blocker()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
