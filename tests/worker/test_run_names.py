"""A child run's name says what the trial is, in the symbols of the papers."""

from dualtune.core.catalog import GRID_KEYS
from dualtune.core.spec import SweepSpec
from dualtune.worker.tracking.run_names import MAX_RUN_NAME, SYMBOLS, child_run_name


def test_a_name_reads_as_the_method_and_its_grid_values() -> None:
    params = {"seed": 0, "dual_lr": 0.01, "epsilon": 0.05}
    assert child_run_name("fl", params) == "fl ε=0.05 η=0.01 seed=0"


def test_every_grid_key_has_its_symbol_in_the_catalogs_order() -> None:
    assert list(SYMBOLS) == list(GRID_KEYS)
    params = dict.fromkeys(reversed(GRID_KEYS), 1.5)
    assert child_run_name("sal", params) == (
        "sal ε=1.5 α=1.5 η=1.5 ρ=1.5 ρ_growth=1.5 ρ_max=1.5 c=1.5 kp=1.5 ν=1.5 lr=1.5 seed=1.5"
    )


def test_numbers_are_written_compactly() -> None:
    name = child_run_name("alm", {"epsilon": 0.1 + 0.2, "rho": 1e-5, "lr": 3.0, "seed": 12})
    assert name == "alm ε=0.3 ρ=1e-05 lr=3 seed=12"


def test_a_method_without_grid_values_is_its_name() -> None:
    assert child_run_name("erm", {}) == "erm"


def test_unknown_keys_follow_the_grid_keys_alphabetically() -> None:
    assert child_run_name("fl", {"zeta": 2, "beta": 0.5, "epsilon": 0.1}) == (
        "fl ε=0.1 beta=0.5 zeta=2"
    )


def test_a_name_never_exceeds_mlflows_limit() -> None:
    params = {f"key_{i:03d}": 0.123456 for i in range(100)}
    name = child_run_name("fl", params)
    assert len(name) == MAX_RUN_NAME == 250
    assert name.endswith("…")


def test_the_trials_of_a_sweep_get_distinct_names() -> None:
    spec = SweepSpec.model_validate(
        {
            "name": "names",
            "task": {"name": "two_moons"},
            "constraint": {"kind": "sample_loss"},
            "methods": ["erm", "fl", "rfl"],
            "grid": {"epsilon": [0.05, 0.1], "alpha": [0.5, 2.0], "dual_lr": 0.01, "seed": [0, 1]},
        }
    )
    trials = spec.trials()
    names = [child_run_name(t.method, t.params) for t in trials]
    assert len(set(names)) == len(trials)
    assert "fl ε=0.05 η=0.01 seed=1" in names
    assert "rfl ε=0.1 α=2 η=0.01 seed=0" in names
