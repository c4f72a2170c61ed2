"""The built-in tasks' parameters and descriptions, registered like any plugin's: by the
``dualtune.tasks`` entry points in the project's pyproject.toml (one per constant below).

No torch here: each task's data loader and model live in ``dualtune.core.tasks.<module>``
(its ``builder``), imported only where trials run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from dualtune.core.catalog.tasks import TaskInfo, TaskParams

PositiveInt = Annotated[int, Field(ge=1)]
Hidden = Annotated[list[PositiveInt], Field(max_length=16)]


class TwoMoonsParams(TaskParams):
    n_train: PositiveInt = 512
    n_val: PositiveInt = 128
    noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    hidden: Hidden = Field(default_factory=lambda: [70, 70])
    data_seed: Annotated[int, Field(ge=0)] = 0


class DigitsParams(TaskParams):
    model: Literal["mlp", "resmlp"] = "mlp"
    """``mlp``: ReLU MLP of widths ``hidden``. ``resmlp``: residual MLP of ``blocks`` blocks
    of ``width`` with a shared readout after every block (``layer_descent`` needs it)."""
    hidden: Hidden = Field(default_factory=lambda: [64])
    blocks: Annotated[int, Field(ge=1, le=32)] = 4
    width: Annotated[int, Field(ge=1, le=4096)] = 64
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    data_seed: Annotated[int, Field(ge=0)] = 0


class IrisSvmParams(TaskParams):
    classes: tuple[
        Literal["setosa", "versicolor", "virginica"], Literal["setosa", "versicolor", "virginica"]
    ] = ("setosa", "versicolor")
    features: Annotated[
        list[Annotated[int, Field(ge=0, le=3)]], Field(min_length=1, max_length=4)
    ] = Field(default_factory=lambda: [0, 1, 2, 3])
    """Iris feature columns. All four by default: setosa vs versicolor then has four support
    vectors exactly on the margin and a unique dual. With the sepal pair (0, 1), four points
    lie on the margin with only three support vectors (Iris is rounded to 0.1 cm), so the
    dual coefficients are not unique and no method can be checked against SVC's."""
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    data_seed: Annotated[int, Field(ge=0)] = 0


class PolyfitParams(TaskParams):
    n_train: PositiveInt = 30
    n_val: PositiveInt = 200
    noise: Annotated[float, Field(ge=0.0)] = 0.1
    degree: Annotated[int, Field(ge=1, le=64)] = 15
    data_seed: Annotated[int, Field(ge=0)] = 0


DataDir = Annotated[str, Field(min_length=1, max_length=4096)]


class FashionMnistParams(TaskParams):
    data_dir: DataDir = "/usr/share/datasets/fashion-mnist"
    """Folder with the four IDX files (``.gz`` or not), as Debian's dataset-fashion-mnist
    installs them."""
    model: Literal["mlp", "cnn"] = "mlp"
    hidden: Hidden = Field(default_factory=lambda: [256, 256])
    """MLP widths (``model: mlp`` only)."""
    n_train: Annotated[int, Field(ge=1, le=60_000)] | None = None
    """Stratified subset of the 60,000 training images (all of them when unset)."""
    n_val: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Stratified subset of the 10,000 test images used as val (all when unset)."""
    data_seed: Annotated[int, Field(ge=0)] = 0


DENOISE_PSNR_LAYERS = 8
"""Most blocks of ``fashion_denoise``: it reports ``psnr_layer_0`` .. ``psnr_layer_7``, one
per block it has."""


class FashionDenoiseParams(TaskParams):
    data_dir: DataDir = "/usr/share/datasets/fashion-mnist"
    """Folder with the four IDX files, as for ``fashion_mnist``."""
    model: Literal["transformer"] = "transformer"
    """A patch transformer with an image estimate after every block (``layer_descent``)."""
    n_train: Annotated[int, Field(ge=1, le=60_000)] = 1000
    """Stratified subset of the 60,000 training images."""
    n_val: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Stratified subset of the 10,000 test images used as val."""
    noise_std: Annotated[float, Field(gt=0.0, le=2.0)] = 0.4
    """Std of the Gaussian noise added to the [0, 1] pixels; drawn once per image from
    ``data_seed``, so every epoch sees the same noisy input."""
    ood_noise_std: Annotated[float, Field(ge=0.0, le=4.0)] = 0.8
    """Noise std of the ``ood_psnr`` / ``ood_loss`` metrics (a level training never sees)."""
    patch: Literal[4, 7] = 4
    """Side of the square patches that become tokens: 4 (49 tokens of 16 pixels), or 7 (16
    tokens of 49 pixels: cheaper, but a width-32 token cannot carry a 49-pixel correction,
    and the estimates stay blurred: 11.7 dB where 4 reaches 16.6)."""
    width: Annotated[int, Field(ge=1, le=512)] = 32
    heads: Annotated[int, Field(ge=1, le=16)] = 2
    blocks: Annotated[int, Field(ge=1, le=DENOISE_PSNR_LAYERS)] = 4
    shared_head: bool = False
    """One estimate head for every block instead of one per block."""
    data_seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _heads_divide_width(self) -> FashionDenoiseParams:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        return self


class Cifar10Params(TaskParams):
    data_dir: DataDir
    """The ``cifar-10-batches-py`` folder of the python version, or its parent; not shipped."""
    model: Literal["resnet18", "cnn"] = "resnet18"
    augment: bool = True
    """Random crop (32, padding 4) and horizontal flip of each training batch."""
    n_train: Annotated[int, Field(ge=1, le=50_000)] | None = None
    n_val: Annotated[int, Field(ge=1, le=10_000)] | None = None
    data_seed: Annotated[int, Field(ge=0)] = 0


class AdultParams(TaskParams):
    model: Literal["logistic", "mlp"] = "logistic"
    hidden: Hidden = Field(default_factory=lambda: [64])
    """MLP widths (``model: mlp`` only)."""
    drop_protected: bool = False
    """Leave the sex and race columns out of the features (the groups stay)."""


class CompasParams(TaskParams):
    model: Literal["logistic", "mlp"] = "logistic"
    hidden: Hidden = Field(default_factory=lambda: [64])
    drop_protected: bool = False
    """Leave the sex and race columns out of the features (the groups stay)."""
    val_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.3
    data_seed: Annotated[int, Field(ge=0)] = 0


class CpsWagesParams(TaskParams):
    model: Literal["linear", "mlp"] = "linear"
    hidden: Hidden = Field(default_factory=lambda: [64])
    drop_protected: bool = False
    """Leave the ethnicity column out of the features (the groups stay)."""
    val_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    n_train: Annotated[int, Field(ge=1, le=28_155)] | None = None
    """Random subset of the training split (at most its size: 22,524 rows by default)."""
    data_seed: Annotated[int, Field(ge=0)] = 0


class ConvectionParams(TaskParams):
    beta: Annotated[float, Field(gt=0.0, le=100.0)] = 30.0
    """Convection speed β in u_t + β u_x = 0 (the paper runs 30 and 50)."""
    n_collocation: Annotated[int, Field(ge=1, le=100_000)] = 1000
    resample: bool = True
    """Draw fresh uniform collocation points for every batch (as the paper does)."""
    grid_x: Annotated[int, Field(ge=2, le=512)] = 256
    grid_t: Annotated[int, Field(ge=2, le=512)] = 100
    hidden: Hidden = Field(default_factory=lambda: [50, 50, 50, 50])
    data_seed: Annotated[int, Field(ge=0)] = 0


TWO_MOONS = TaskInfo(
    "two_moons",
    "sklearn make_moons (512 train / 128 val, noise 0.1), MLP 70-70 as in the FL code",
    "classification",
    TwoMoonsParams,
    "dualtune.core.tasks.two_moons:TwoMoons",
    group_attributes=("side",),
)


DIGITS = TaskInfo(
    "digits",
    "sklearn digits (1,797 8×8 images, 10 classes), MLP or residual MLP with a "
    "readout after every block (resmlp)",
    "classification",
    DigitsParams,
    "dualtune.core.tasks.digits:Digits",
    extra_constraint_kinds=("layer_descent",),
)


IRIS_SVM = TaskInfo(
    "iris_svm",
    "two Iris classes, linear model, objective ½‖w‖², per-sample margin constraints "
    "1 − y_i f(x_i) ≤ 0: a hard-margin SVM",
    "classification",
    IrisSvmParams,
    "dualtune.core.tasks.iris_svm:IrisSvm",
    has_objective=True,
)


POLYFIT = TaskInfo(
    "polyfit",
    "1-D noisy polynomial regression with an over-parameterised polynomial model "
    "(the Feasible Learning toy)",
    "regression",
    PolyfitParams,
    "dualtune.core.tasks.polyfit:Polyfit",
)


FASHION_MNIST = TaskInfo(
    "fashion_mnist",
    "Fashion-MNIST (60,000 train / 10,000 test as val, 28×28, 10 classes) from "
    "Debian's dataset-fashion-mnist; MLP or small CNN",
    "classification",
    FashionMnistParams,
    "dualtune.core.tasks.fashion_mnist:FashionMnist",
)


CIFAR10 = TaskInfo(
    "cifar10",
    "CIFAR-10 (50,000 train / 10,000 test as val, 32×32×3, 10 classes) from the "
    "python batches in a data_dir you provide; ResNet-18 or small CNN, crop + flip "
    "augmentation (a GPU workload)",
    "classification",
    Cifar10Params,
    "core.tasks.cifar10:Cifar10",
)


ADULT = TaskInfo(
    "adult",
    "UCI Adult income > 50K (32,561 train / 16,281 test as val), one-hot + "
    "standardised features; logistic regression or MLP",
    "classification",
    AdultParams,
    "dualtune.core.tasks.adult:Adult",
    group_attributes=("sex", "race"),
)


COMPAS = TaskInfo(
    "compas",
    "ProPublica COMPAS two-year recidivism (6,172 rows after ProPublica's filter, "
    "70/30 stratified split); logistic regression or MLP",
    "classification",
    CompasParams,
    "dualtune.core.tasks.compas:Compas",
    group_attributes=("race", "sex"),
)


CPS_WAGES = TaskInfo(
    "cps_wages",
    "CPS 1988 weekly wages (28,155 men, 80/20 split), standardised heavy-tailed wage "
    "regression; linear model or MLP",
    "regression",
    CpsWagesParams,
    "dualtune.core.tasks.cps_wages:CpsWages",
    group_attributes=("ethnicity",),
)


CONVECTION = TaskInfo(
    "convection",
    "PINN for u_t + β u_x = 0 on [0, 2π] × [0, 1], u(x, 0) = sin x, periodic in x "
    "(β = 30): tanh MLP 4×50, residuals of IC, BC and PDE as equality constraints",
    "regression",
    ConvectionParams,
    "dualtune.core.tasks.convection:Convection",
    constraint_kinds=("pinn_residual",),
    extra_metrics=("rel_l2",),
)


FASHION_DENOISE = TaskInfo(
    "fashion_denoise",
    "Fashion-MNIST denoising (clean + Gaussian noise → clean, per-image MSE) with a "
    "small patch transformer that emits an estimate after every block (an unrolled "
    "denoiser, for layer_descent)",
    "regression",
    FashionDenoiseParams,
    "dualtune.core.tasks.fashion_denoise:FashionDenoise",
    extra_constraint_kinds=("layer_descent",),
    extra_metrics=(
        "psnr",
        *(f"psnr_layer_{layer}" for layer in range(DENOISE_PSNR_LAYERS)),
        "ood_psnr",
        "ood_loss",
    ),
)
