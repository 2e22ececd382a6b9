"""Typed experiment configuration: frozen nested dataclasses from a Python file, tyro overrides.

Option names, defaults and ranges are Faceswap's (reference/models.md §3, data.md §8.3) so that a
Faceswap user finds the settings they know. Every dataclass validates itself in `__post_init__`
(which tyro may run more than once, so it never mutates) and raises `ConfigError` naming the option,
the value and what is allowed, before anything is built.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from typing import Literal

from fsjax.config.checks import ConfigError, _check_choice, _check_range  # noqa: F401
from fsjax.config.lpips_files import config_problem
from fsjax.config.plugins import (  # noqa: F401  (re-exported)
    MODEL_PLUGINS,
    PHAZE_A_PRETRAINED_ENCODERS,
    PHAZE_A_UPSCALERS,
    DfakerConfig,
    DflSaeConfig,
    DlightConfig,
    PhazeAConfig,
    RealfaceConfig,
    UnbalancedConfig,
)
from fsjax.config.scale import DistributedConfig, ShardingConfig
from fsjax.config.train import TrainConfig

CENTERINGS = ("face", "head", "legacy")
DTYPES = ("float32", "bfloat16", "float16")
"""`model.dtype`: the precision policies (`fsjax.nn.precision`)."""
MODEL_CHANGEABLE = ("dtype", "loss_scale", "loss_scale_growth_steps")
"""The `model.*` options a resume may change (the precision policy, as Faceswap lets
`mixed_precision` change); every other model option is locked when the model is created."""
# Landmark masks are drawn by fsjax; the others are neural-network masks stored in the PNG header.
MASK_TYPES = ("none", "bisenet-fp_face", "bisenet-fp_head", "components", "custom_face",
              "custom_head", "extended", "unet-dfl", "vgg-clear", "vgg-obstructed")
LOSS_FUNCTIONS = ("mae", "mse", "ssim", "logcosh", "smooth_loss", "l_inf_norm",
                  "pixel_gradient_diff", "laploss", "lpips_alex", "lpips_squeeze", "lpips_vgg16",
                  "ms_ssim", "gmsd", "ffl")
# Faceswap offers these only as loss_function_2..4, never as the primary loss.
SECONDARY_LOSS_FUNCTIONS = ("flip",)
OPTIMIZERS = ("adabelief", "adam", "adamax", "adamw", "lion", "nadam", "rms-prop")
CLIPPING = ("none", "autoclip", "global_norm", "norm", "value")
SAVE_OPTIMIZER = ("never", "always", "exit")
LR_FINDER_MODES = ("set", "graph_and_set", "graph_and_exit")
LR_FINDER_STRENGTHS = ("default", "aggressive", "extreme")
DEMO_ITERATIONS = 300


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which Faceswap model plugin to train, and its locked options."""

    name: str = "original"
    """Faceswap model plugin (`-t/--trainer`)."""
    lowmem: bool = False
    """Original: drop the 1024-filter encoder conv and halve the dense width; DFL-H128: halve
    the encoder dimension (512 -> 256); Villain: 8 residual blocks, no 1024 separable conv;
    Unbalanced: fixed smaller widths that replace its nodes and complexity options."""
    dfaker: DfakerConfig = DfakerConfig()
    """DFaker's options."""
    dfl_sae: DflSaeConfig = DflSaeConfig()
    """DFL-SAE's options."""
    phaze_a: PhazeAConfig = PhazeAConfig()
    """Phaze-A's options (`fsjax.models.phaze_a_presets` has Faceswap's presets)."""
    dlight: DlightConfig = DlightConfig()
    """DLight's options."""
    realface: RealfaceConfig = RealfaceConfig()
    """RealFace's options."""
    unbalanced: UnbalancedConfig = UnbalancedConfig()
    """Unbalanced's options (its `lowmem` is `model.lowmem`)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Precision policy: the layers' compute dtype. Parameters, optimizer state, normalisation
    statistics, the output activations and the losses stay float32. float16 is Faceswap's
    mixed_precision (with dynamic loss scaling); bfloat16 suits TPUs and recent GPUs. May
    change between sessions, as Faceswap's mixed_precision may."""
    loss_scale: float = 2.0**15
    """float16 only: the starting loss scale (Keras's 2**15); halves when a step's gradients
    overflow (the step is skipped)."""
    loss_scale_growth_steps: int = 2000
    """float16 only: the loss scale doubles after this many finite steps in a row (Keras's)."""
    icnr_init: bool = False
    """Start every upscale conv with ICNR (sub-pixels identical: no checkerboard at first)."""
    conv_aware_init: bool = False
    """Start every conv with Convolution-Aware initialization (slower to create)."""
    reflect_padding: bool = False
    """Pad convolutions by reflecting the image instead of with zeros (fewer edge artefacts)."""

    def __post_init__(self) -> None:
        _check_choice("model.name", self.name, MODEL_PLUGINS)
        _check_choice("model.dtype", self.dtype, DTYPES)
        if not (1.0 <= self.loss_scale <= 2.0**64):
            raise ConfigError(f"model.loss_scale: {self.loss_scale} is not in 1..2**64")
        if self.loss_scale_growth_steps < 1:
            raise ConfigError("model.loss_scale_growth_steps: must be at least 1, got "
                              f"{self.loss_scale_growth_steps}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the faces come from and how they are cropped (Faceswap's `global` crop options)."""

    faces_a: pathlib.Path | None = None
    """Folder of Faceswap-extracted faces for side A (`-A`). Unset: the built-in demo faces."""
    faces_b: pathlib.Path | None = None
    """Folder of Faceswap-extracted faces for side B (`-B`). Unset: the built-in demo faces."""
    demo_dir: pathlib.Path | None = None
    """Where the demo faces are written on first use (default: ~/.cache/fsjax/demo_faces)."""
    centering: Literal["face", "head", "legacy"] = "face"
    """Centre of the training crop."""
    coverage: float = 100.0
    """Percentage of the extracted face used for training (62.5..100)."""
    vertical_offset: float = 0.0
    """Moves the crop down (+) or up (-) by this percentage of its size (-25..25)."""
    faceswap_compat: bool = False
    """Reproduce Faceswap's verified data bugs exactly (docs/compat.md) instead of fixing them."""
    bad_faces: Literal["stop", "skip"] = "stop"
    """Faces that cannot be used (bad header, truncated...): stop before training and list them,
    or skip them with a warning."""
    num_processes: int = 2
    """Data-loading worker processes (0 = load in the training process)."""
    pre_fetch: int = 2
    """Batches each worker prepares ahead."""

    def __post_init__(self) -> None:
        if (self.faces_a is None) != (self.faces_b is None):
            raise ConfigError("data.faces_a and data.faces_b must be given together (or neither)")
        for option, folder in (("data.faces_a", self.faces_a), ("data.faces_b", self.faces_b)):
            if folder is not None and not pathlib.Path(folder).is_dir():
                raise ConfigError(f"{option}={str(folder)!r}: folder does not exist")
        _check_choice("data.centering", self.centering, CENTERINGS)
        _check_choice("data.bad_faces", self.bad_faces, ("stop", "skip"))
        _check_range("data.coverage", self.coverage, 62.5, 100.0)
        _check_range("data.vertical_offset", self.vertical_offset, -25.0, 25.0)
        _check_range("data.num_processes", self.num_processes, 0, 32)
        _check_range("data.pre_fetch", self.pre_fetch, 1, 10)

    @property
    def uses_demo(self) -> bool:
        return self.faces_a is None


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Faceswap's `trainer.augmentation` options and the train switches that turn them off."""

    zoom_amount: float = 5.0
    """Random zoom, percent (0..25)."""
    rotation_range: float = 10.0
    """Random rotation, degrees (0..25)."""
    shift_range: float = 5.0
    """Random shift, percent of the size (0..25)."""
    flip_chance: float = 50.0
    """Chance of a horizontal flip, percent (0..75)."""
    color_lightness: float = 30.0
    """L*a*b* lightness shift, percent (0..75)."""
    color_ab: float = 8.0
    """L*a*b* a/b shift, percent (0..50)."""
    color_clahe_chance: float = 50.0
    """Chance of CLAHE on the lightness channel, percent (0..75)."""
    color_clahe_max_size: int = 4
    """Largest CLAHE grid multiplier (1..8)."""
    no_flip: bool = False
    """Never flip faces (`-P/--no-flip`)."""
    no_warp: bool = False
    """Never warp the input faces (`-W/--no-warp`)."""
    no_augment_color: bool = False
    """Skip the colour augmentation (`-c/--no-augment-color`)."""
    warp_to_landmarks: bool = False
    """Warp to the landmarks of a similar face of the other side (`-M`)."""

    def __post_init__(self) -> None:
        _check_range("augment.zoom_amount", self.zoom_amount, 0, 25)
        _check_range("augment.rotation_range", self.rotation_range, 0, 25)
        _check_range("augment.shift_range", self.shift_range, 0, 25)
        _check_range("augment.flip_chance", self.flip_chance, 0, 75)
        _check_range("augment.color_lightness", self.color_lightness, 0, 75)
        _check_range("augment.color_ab", self.color_ab, 0, 50)
        _check_range("augment.color_clahe_chance", self.color_clahe_chance, 0, 75)
        _check_range("augment.color_clahe_max_size", self.color_clahe_max_size, 1, 8)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Faceswap's `global.loss` options."""

    loss_function: str = "ssim"
    """Primary loss (weight 100 %)."""
    loss_function_2: str = "mse"
    """Second loss, or none."""
    loss_weight_2: float = 100.0
    """Weight of the second loss, percent (0..400)."""
    loss_function_3: str = "none"
    """Third loss, or none."""
    loss_weight_3: float = 0.0
    """Weight of the third loss, percent (0..400)."""
    loss_function_4: str = "none"
    """Fourth loss, or none."""
    loss_weight_4: float = 0.0
    """Weight of the fourth loss, percent (0..400)."""
    mask_loss_function: Literal["mae", "mse"] = "mse"
    """Loss between the learned mask and the face mask."""
    eye_multiplier: float = 3.0
    """Extra weight on the eye area (1..40; 1 = off)."""
    mouth_multiplier: float = 2.0
    """Extra weight on the mouth area (1..40; 1 = off)."""
    penalized_mask_loss: bool = True
    """Multiply the face loss by the face mask, so the background is ignored."""
    mask_type: str = "extended"
    """Face mask: extended or components (drawn from the landmarks), a mask stored in the face
    files by Faceswap's extract (bisenet-fp_face, vgg-clear, ...), or none."""
    mask_dilation: float = 0.0
    """Grow (+) or shrink (-) the face mask, percent of its size (-5..5)."""
    mask_blur_kernel: int = 3
    """Gaussian blur of a stored mask, in its pixels (0..9; landmark masks are not blurred)."""
    mask_threshold: float = 4.0
    """Stored mask values within this percent of 0 or 255 snap to 0 or 255 (0..50)."""
    learn_mask: bool = False
    """Add a mask output to every decoder and train it against the face mask."""
    faceswap_compat: bool = False
    """Reproduce Faceswap's verified loss bugs exactly instead of computing the intended value."""
    lpips_weights: pathlib.Path | None = None
    """Folder with the pretrained files the lpips_* losses need (never downloaded): torchvision's
    alexnet-owt-7be5be79.pth / squeezenet1_1-b8a52dc0.pth / vgg16-397923af.pth and LPIPS v0.1's
    alex.pth / squeeze.pth / vgg.pth (Faceswap's *_imagenet_no_top_v2.pth / *_lpips_v2.pth also)."""

    def __post_init__(self) -> None:
        _check_choice("loss.loss_function", self.loss_function, LOSS_FUNCTIONS)
        for i in (2, 3, 4):
            _check_choice(
                f"loss.loss_function_{i}", getattr(self, f"loss_function_{i}"),
                ("none",) + LOSS_FUNCTIONS + SECONDARY_LOSS_FUNCTIONS,
            )
            _check_range(f"loss.loss_weight_{i}", getattr(self, f"loss_weight_{i}"), 0, 400)
        _check_choice("loss.mask_loss_function", self.mask_loss_function, ("mae", "mse"))
        _check_range("loss.eye_multiplier", self.eye_multiplier, 1, 40)
        _check_range("loss.mouth_multiplier", self.mouth_multiplier, 1, 40)
        _check_choice("loss.mask_type", self.mask_type, MASK_TYPES)
        _check_range("loss.mask_dilation", self.mask_dilation, -5, 5)
        _check_range("loss.mask_blur_kernel", self.mask_blur_kernel, 0, 9)
        _check_range("loss.mask_threshold", self.mask_threshold, 0, 50)
        if self.mask_type == "none" and (self.penalized_mask_loss or self.learn_mask):
            raise ConfigError(
                "loss.mask_type='none' cannot be used with penalized_mask_loss or learn_mask: "
                "choose extended or components, or turn both off"
            )
        if any(name.startswith("lpips_") for name in self.functions):
            if problem := config_problem(self):
                raise ConfigError(problem)

    @property
    def functions(self) -> dict[str, float]:
        """Loss name -> weight, as Faceswap's collator builds it (a later duplicate wins)."""
        out = {self.loss_function: 1.0}
        for i in (2, 3, 4):
            out[getattr(self, f"loss_function_{i}")] = getattr(self, f"loss_weight_{i}") / 100.0
        return {name: weight for name, weight in out.items() if name != "none" and weight > 0}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Faceswap's `global.optimizer` options and its learning-rate finder settings."""

    optimizer: str = "adam"
    """Optimizer (locked): adabelief, adam, adamax, adamw, lion, nadam or rms-prop."""
    learning_rate: float = 5e-5
    """Learning rate (changeable on resume)."""
    epsilon_exponent: int = -7
    """Epsilon is 10 to this power (-20..0; not used by lion; AdaBelief wants about -16)."""
    ada_beta_1: float = 0.9
    """First-moment decay (0 <= value < 1, locked)."""
    ada_beta_2: float = 0.999
    """Second-moment decay (0 <= value < 1, locked; also lion's momentum decay, as in
    Faceswap)."""
    ada_amsgrad: bool = False
    """AMSGrad variant of adam, adamw and adabelief (locked)."""
    weight_decay: float = 0.0
    """Weight decay (0..1) on kernels only, never biases or 1-D weights: coupled L2 for adam,
    adamax, nadam and rms-prop, decoupled for adamw, adabelief and lion."""
    save_optimizer: str = "exit"
    """Save the optimizer state with the model: never, always, or exit (only in the save made
    when training stops cleanly). Snapshots always include it. Without it a resume starts the
    optimizer afresh (changeable)."""
    gradient_clipping: str = "none"
    """none, autoclip (clip to a percentile of recent gradient norms), global_norm, norm (each
    tensor by its own norm) or value (element-wise)."""
    clipping_value: float = 1.0
    """The clip norm or value (0..10); for autoclip the percentile / 10 (1.0 = 10th)."""
    autoclip_history: int = 10000
    """Gradient norms AutoClip remembers (1..100000; Faceswap's 0 crashes, so it is refused)."""
    autoclip_per_tensor: bool = False
    """AutoClip as Faceswap 2 did it: clip each tensor by its own norm, nearest-rank percentile."""
    gradient_accumulation: int = 1
    """Average the gradients of this many iterations per optimizer step (1..100)."""
    lr_finder_iterations: int = 1000
    """Steps the learning-rate finder sweeps 1e-10 -> 1e-1 over (100..10000, locked)."""
    lr_finder_mode: str = "set"
    """set: use the found rate; graph_and_set: also save the LR-vs-loss graph; graph_and_exit:
    save the graph and the rate, then stop (locked)."""
    lr_finder_strength: str = "default"
    """The found rate is the best one / 10 (default), / 5 (aggressive) or / 2.5 (extreme)."""
    faceswap_compat: bool = False
    """Reproduce Faceswap's resume bug: the learning rate saved with the optimizer state wins
    over a changed `learning_rate` (the finder's rate still applies)."""

    def __post_init__(self) -> None:
        _check_choice("optimizer.optimizer", self.optimizer, OPTIMIZERS)
        if not 0 < self.learning_rate <= 1:
            raise ConfigError(
                f"optimizer.learning_rate={self.learning_rate!r} is out of range: allowed (0, 1]"
            )
        _check_range("optimizer.epsilon_exponent", self.epsilon_exponent, -20, 0)
        for option in ("ada_beta_1", "ada_beta_2"):
            if not 0 <= getattr(self, option) < 1:
                raise ConfigError(f"optimizer.{option}={getattr(self, option)!r} is out of "
                                  "range: allowed 0 <= value < 1")
        _check_range("optimizer.weight_decay", self.weight_decay, 0, 1)
        _check_choice("optimizer.save_optimizer", self.save_optimizer, SAVE_OPTIMIZER)
        _check_choice("optimizer.gradient_clipping", self.gradient_clipping, CLIPPING)
        _check_range("optimizer.clipping_value", self.clipping_value, 0, 10)
        if self.autoclip_history == 0:
            raise ConfigError(
                "optimizer.autoclip_history=0 is not allowed: an unlimited history does not fit "
                "a fixed-size buffer (Faceswap documents 0 as unlimited but crashes); "
                "use up to 100000"
            )
        _check_range("optimizer.autoclip_history", self.autoclip_history, 1, 100_000)
        _check_range("optimizer.gradient_accumulation", self.gradient_accumulation, 1, 100)
        _check_range("optimizer.lr_finder_iterations", self.lr_finder_iterations, 100, 10_000)
        _check_choice("optimizer.lr_finder_mode", self.lr_finder_mode, LR_FINDER_MODES)
        _check_choice("optimizer.lr_finder_strength", self.lr_finder_strength,
                      LR_FINDER_STRENGTHS)

    @property
    def epsilon(self) -> float:
        return 10.0**self.epsilon_exponent


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training run needs."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()
    sharding: ShardingConfig = ShardingConfig()

    @property
    def target_iterations(self) -> int:
        """Total iterations to reach: as given, else a short demo run or Faceswap's default."""
        if self.train.iterations is not None:
            return self.train.iterations
        return DEMO_ITERATIONS if self.data.uses_demo else 1_000_000


def cache_root() -> pathlib.Path:
    """fsjax's cache folder (demo faces, compiled programs): `$FSJAX_CACHE`, else
    `~/.cache/fsjax`."""
    root = os.environ.get("FSJAX_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "fsjax"


def load_experiment(path: str | pathlib.Path) -> ExperimentConfig:
    """Runs `get_config()` from an experiment file (our own code, never user data); a model
    folder instead gives the options its state file records (read as JSON, never run)."""
    path = pathlib.Path(path)
    if path.is_dir():
        from fsjax.config.faceswap_state import experiment_from_folder

        return experiment_from_folder(path)
    if not path.is_file():
        raise ConfigError(f"--config={str(path)!r}: experiment file does not exist")
    spec = importlib.util.spec_from_file_location(f"fsjax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config={str(path)!r}: the file defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"--config={str(path)!r}: get_config() must return an ExperimentConfig")
    return config
