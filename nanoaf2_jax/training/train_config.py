"""The training configuration: `TrainConfig`, what a run computes (model, optimisation, data,
padding, schedule, logging), validated on construction and serialised into every checkpoint, and the two errors of a run:
ConfigError (an invalid config) and TrainingError (a run that cannot start or go on).

The named recipes built from it (`reference`, `default`, `tiny`) are plain data in the
repository's top-level configs.py; `dataclasses.replace` (or `TrainConfig.override`) derives
variants. The training loop lives in trainer.py.
"""

from __future__ import annotations

import dataclasses
import json

from ..data.download import REFERENCE_PDB_IDS, validate_pdb_id
from ..model.model_config import ModelConfig
from .mixed_precision import PRECISIONS
from .train_step import OptimConfig
from .trainable import TRAINABLE

# Length buckets of the `default` recipe. A protein is padded to the smallest edge >= its length,
# so a bucket compiles once and padding wastes at most ~45% of a short protein (whose steps are
# cheap anyway) and ~25% above 96 residues, where the O(L^3) triangular updates dominate.
# Eight edges bound the number of compilations at eight; the reference's 8 proteins (20 to 76
# residues) use four of them.
DEFAULT_BUCKETS = (32, 48, 64, 80, 96, 128, 160, 200)
LOADERS = ("memory", "grain")


class ConfigError(ValueError):
    """An invalid training configuration; the message names the field and the value."""


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Optimisation:
    lr: float = 3e-3
    weight_decay: float = 0.01  # torch.optim.AdamW's default, which the reference relies on
    warmup_steps: int = 10
    grad_clip: float = 1.0
    # Sample with an exponential moving average of the weights at this decay (ema.py;
    # AlphaFold 2: 0.999). None: the raw weights (the reference).
    ema_decay: float | None = None

    def optim_config(self, total_steps: int) -> OptimConfig:
        """The optimiser for a run of `total_steps` steps (the cosine decays to 0 at its end)."""
        return OptimConfig(
            learning_rate=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            total_steps=total_steps,
            grad_clip=self.grad_clip,
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = ModelConfig()
    optimisation: Optimisation = Optimisation()
    epochs: int = 1000
    batch_size: int = 1
    # Every batch padded to this length (the reference: 200). Takes precedence over buckets.
    pad_to: int | None = None
    # Length-bucket edges: a batch is padded to the smallest edge holding its longest protein.
    # With neither pad_to nor buckets, a batch is padded to its longest protein.
    buckets: tuple[int, ...] | None = DEFAULT_BUCKETS
    # Mask padding out of attention and triangular updates too (not only out of the losses).
    attention_mask: bool = True
    min_length: int = 20
    max_length: int = 200
    seed: int = 42
    log_every: int = 50
    checkpoint_every_epochs: int = 10
    # Also checkpoint every N optimiser steps, mid-epoch too (0: only every
    # checkpoint_every_epochs): an epoch of thousands of chains is hours on a CPU.
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 3
    # Also write the metrics.jsonl numbers as TensorBoard event files into <output_dir>/tensorboard.
    tensorboard: bool = True
    # Every N epochs sample each training protein (and up to eval_max_proteins of eval_dir)
    # once with eval_steps reverse steps and log CA-RMSD, TM-score, lDDT and N-CA-C RMSD
    # (evaluation/during_training.py); 0: never. The default run of 1000 epochs evaluates 5 times.
    eval_every_epochs: int = 200
    eval_steps: int = 25
    eval_dir: str | None = None
    eval_max_proteins: int = 4
    # Also evaluate every N optimiser steps, mid-epoch too (0: only every eval_every_epochs).
    eval_every_steps: int = 0
    # Evaluate at most this many training proteins (the first of the data source); None: all of
    # them (the eight of the reference set; thousands of chains would take hours).
    eval_train_proteins: int | None = None
    # Structures to download into data/pdb and train on; ignored when data_dir is set.
    pdb_ids: tuple[str, ...] = tuple(REFERENCE_PDB_IDS)
    # Train on every structure file in this directory instead (nothing is downloaded), or on the
    # cache `python -m nanoaf2_jax.prepare` made there (loader 'grain'). Several directories (a
    # tuple; loader 'grain') are prepared into one cache and mixed as data_mix says.
    data_dir: str | tuple[str, ...] | None = None
    # How many chains each data directory gives per epoch, in their order. A directory with fewer
    # chains repeats them (each as often, +-1), one with more gives a seeded new subset each
    # epoch, so a few proteins are not drowned by thousands of chains (with one directory: an
    # epoch of that many of its chains). None: every chain once per epoch, whichever directory.
    data_mix: tuple[int, ...] | None = None
    output_dir: str = "outputs/default"
    # -- The data pipeline (docs/data.md). The defaults here are the reference's behaviour, so
    # configs saved before these fields existed load unchanged; configs.py's default and tiny
    # turn them on.
    # 'memory': every structure parsed at start-up into BatchPlan (the reference's way);
    # 'grain': a prepared cache (data_dir holding one, or structure files prepared on the fly into
    # <output_dir>/data_cache) read through Grain (data/loader.py), with crops.
    loader: str = "memory"
    # Chains longer than this are cropped (contiguous or spatial, data/crops.py) instead of
    # dropped; None: dropped above max_length, as in the reference. 'grain' only.
    crop_size: int | None = None
    spatial_crop_fraction: float = 0.5  # the share of crops that are spatial
    # The file's residue numbering reaches the relative-position features, so chain breaks are
    # visible; False: residues numbered 0..L-1 whatever the file says (the reference).
    file_numbering: bool = False
    # HETATM polymer residues kept, coded by their parent (MSE -> M); False: ATOM records only.
    modified_residues: bool = False
    # Grain worker processes reading batches (0: threads of the training process).
    loader_workers: int = 0
    # A token budget instead of batch_size chains per step: batch_tokens // L chains of padded
    # length L (at least one), so one step holds many short chains or a few long ones. 'grain' only.
    batch_tokens: int | None = None
    # Scale-out (training/parallel.py, docs/distributed.md). batch_size is the global batch of
    # one micro-step, split over every device of every process; each optimiser step
    # accumulates the gradients of grad_accum such batches (effective batch grad_accum ×
    # batch_size, activation memory of batch_size). 1: no accumulation.
    grad_accum: int = 1
    # "float32", or "bf16": matrix products and activations in bfloat16 on float32 parameters,
    # optimiser state, LayerNorm statistics, softmaxes and losses (training/mixed_precision.py).
    precision: str = "float32"
    # -- Fine-tuning a trained model (docs/generalisation.md, configs.py `calibrate`).
    # Start from the weights of this checkpoint (a run directory: its latest complete checkpoint;
    # or a step directory), with fresh optimiser state at step 0; None: freshly initialised.
    # The model must have the checkpoint's parameter tree.
    init_from: str | None = None
    # The parameters trained (training/trainable.py): 'all', or 'plddt_head' (the confidence
    # head only; every other parameter stays bit-identical, so sampling is unchanged).
    trainable: str = "all"

    def __post_init__(self):
        positive = ("epochs", "batch_size", "min_length", "max_length", "log_every",
                    "checkpoint_every_epochs", "keep_checkpoints", "eval_steps", "eval_max_proteins",
                    "grad_accum")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.eval_every_epochs, int) or isinstance(self.eval_every_epochs, bool) \
                or self.eval_every_epochs < 0:
            raise ConfigError(f"eval_every_epochs must be 0 (off) or a positive integer, got "
                              f"{self.eval_every_epochs!r}")
        for name in ("checkpoint_every_steps", "eval_every_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be 0 (off) or a positive integer, got {value!r}")
        if self.eval_train_proteins is not None and (
                not isinstance(self.eval_train_proteins, int) or self.eval_train_proteins < 0):
            raise ConfigError(f"eval_train_proteins must be None (all) or an integer >= 0, got "
                              f"{self.eval_train_proteins!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_length < self.min_length:
            raise ConfigError(f"max_length {self.max_length} is below min_length {self.min_length}")
        if self.pad_to is not None and self.pad_to < self.max_length:
            raise ConfigError(
                f"pad_to {self.pad_to} is shorter than max_length {self.max_length}: "
                "proteins up to max_length must fit")
        if self.buckets is not None:
            buckets = tuple(self.buckets)
            if not buckets or any(not isinstance(b, int) or b < 1 for b in buckets):
                raise ConfigError(f"buckets must be positive integers, got {self.buckets!r}")
            object.__setattr__(self, "buckets", tuple(sorted(set(buckets))))
        self._check_data_fields()
        opt = self.optimisation
        if not opt.lr > 0 or opt.weight_decay < 0 or opt.warmup_steps < 0 or not opt.grad_clip > 0:
            raise ConfigError(f"invalid optimisation settings: {opt}")
        if opt.ema_decay is not None and not 0 < opt.ema_decay < 1:
            raise ConfigError(f"ema_decay must be None (off) or in (0, 1), got {opt.ema_decay!r}")
        try:
            ids = tuple(validate_pdb_id(i) for i in self.pdb_ids)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        object.__setattr__(self, "pdb_ids", ids)

    def _check_data_fields(self):
        if self.loader not in LOADERS:
            raise ConfigError(f"loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")
        if self.crop_size is not None:
            if not isinstance(self.crop_size, int) or isinstance(self.crop_size, bool) \
                    or self.crop_size < self.min_length:
                raise ConfigError(f"crop_size must be an integer of at least min_length "
                                  f"({self.min_length}) or None, got {self.crop_size!r}")
            if self.loader != "grain":
                raise ConfigError("crop_size needs loader 'grain' (the in-memory loader drops "
                                  "chains above max_length, as the reference does): with "
                                  "--loader memory pass --crop-size none")
            if self.pad_to is not None and self.crop_size > self.pad_to:
                raise ConfigError(f"crop_size {self.crop_size} does not fit pad_to {self.pad_to}")
        if not 0.0 <= self.spatial_crop_fraction <= 1.0:
            raise ConfigError(f"spatial_crop_fraction must be within [0, 1], got "
                              f"{self.spatial_crop_fraction!r}")
        if self.batch_tokens is not None:
            if not isinstance(self.batch_tokens, int) or isinstance(self.batch_tokens, bool) \
                    or self.batch_tokens < 1:
                raise ConfigError(f"batch_tokens must be a positive integer or None, got "
                                  f"{self.batch_tokens!r}")
            if self.loader != "grain":
                raise ConfigError("batch_tokens needs loader 'grain'")
        self._check_data_dirs()
        if not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            raise ConfigError(f"loader_workers must be 0 or more, got {self.loader_workers!r}")

    def _check_data_dirs(self):
        if isinstance(self.data_dir, (list, tuple)):
            dirs = tuple(str(d) for d in self.data_dir)
            object.__setattr__(self, "data_dir", dirs[0] if len(dirs) == 1 else (dirs or None))
        dirs = self.data_dirs
        if len(dirs) > 1 and self.loader != "grain":
            raise ConfigError("several data directories need loader 'grain' (they are prepared into "
                              "one cache)")
        if self.data_mix is not None:
            mix = tuple(self.data_mix)
            if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in mix):
                raise ConfigError(f"data_mix must be positive integers, got {self.data_mix!r}")
            if len(mix) != len(dirs) or not dirs:
                raise ConfigError(f"data_mix gives {len(mix)} count(s) for {len(dirs)} data "
                                  "directories: one per directory (with one, its chains per epoch)")
            object.__setattr__(self, "data_mix", mix)

    @property
    def data_dirs(self) -> tuple[str, ...]:
        """data_dir as a tuple (empty without one)."""
        if self.data_dir is None:
            return ()
        return self.data_dir if isinstance(self.data_dir, tuple) else (self.data_dir,)

    # -- (de)serialisation: checkpoints carry the whole config as JSON ---------------------------

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["buckets"] = None if self.buckets is None else list(self.buckets)
        d["pdb_ids"] = list(self.pdb_ids)
        for key in ("data_dir", "data_mix"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown training config keys: {', '.join(unknown)}")
        if "model" in d:
            d["model"] = ModelConfig.from_dict(d["model"])
        if "optimisation" in d:
            d["optimisation"] = Optimisation(**d["optimisation"])
        for key in ("buckets", "pdb_ids", "data_mix"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        return cls.from_dict(json.loads(s))

    def override(self, **changes) -> TrainConfig:
        """replace() that also accepts model / optimisation fields by their own names
        (c_s=..., lr=...), as the command line gives them."""
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        optim_fields = {f.name for f in dataclasses.fields(Optimisation)}
        model = {k: changes.pop(k) for k in list(changes) if k in model_fields}
        optim = {k: changes.pop(k) for k in list(changes) if k in optim_fields}
        try:
            if model:
                changes["model"] = dataclasses.replace(self.model, **model)
            if optim:
                changes["optimisation"] = dataclasses.replace(self.optimisation, **optim)
            return dataclasses.replace(self, **changes)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # ModelConfig's own checks, unknown names
            raise ConfigError(str(err)) from None

