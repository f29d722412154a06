"""Training checkpoints (orbax) and weights for inference.

Layout: <output_dir>/checkpoints/<step>/{params, opt_state, meta}. `meta` is JSON: step, epoch,
the data-order generator's state, the PRNG key, the dataset's fingerprint and the full
training config, so a checkpoint alone says how to continue the run.

orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, writing
commit_success.txt first. We trust only step directories holding that marker (and the other
files a finished save leaves): a step directory without it was not written by a finished orbax
save and is never restored from.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..model.model_config import ModelConfig, model_preset
from ..model.convert import ConversionError, load_state_dict, state_dict_to_params, template_params

_LOG = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
QUARANTINE_SUBDIR = "incomplete_checkpoints"
FORMAT = "nanoaf2-jax-train-checkpoint/1"
_ITEMS = ("params", "opt_state", "meta")
_COMMIT_FILE = "commit_success.txt"  # orbax's marker of a finalised save
_STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".npz")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or used; the message names the path."""


# ---------------------------------------------------------------------------------------------
# Finding complete checkpoints
# ---------------------------------------------------------------------------------------------


def checkpoints_dir(output_dir) -> Path:
    return Path(output_dir) / CHECKPOINT_SUBDIR


def is_complete(step_dir) -> bool:
    """True for a step directory that a finished orbax save left behind."""
    step_dir = Path(step_dir)
    if not (step_dir.name.isdigit() and step_dir.is_dir()):
        return False
    if not (step_dir / _COMMIT_FILE).is_file() or not (step_dir / _STEP_METADATA_FILE).is_file():
        return False
    return all((step_dir / item / _COMMIT_FILE).is_file() for item in _ITEMS)


def scan(ckpt_dir) -> tuple[dict[int, Path], list[Path]]:
    """(complete steps -> directory, incomplete step directories) under `ckpt_dir`.

    Incomplete: a numeric directory lacking the commit markers. orbax's own temporary
    directories are not listed; orbax removes them itself when a manager opens the directory.
    """
    complete, incomplete = {}, []
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return complete, incomplete
    for entry in sorted(ckpt_dir.iterdir()):
        if not entry.name.isdigit() or not entry.is_dir():
            continue
        if is_complete(entry):
            complete[int(entry.name)] = entry
        else:
            incomplete.append(entry)
    return dict(sorted(complete.items())), incomplete


def latest_complete(ckpt_dir) -> Path | None:
    complete, _ = scan(ckpt_dir)
    return complete[max(complete)] if complete else None


def read_meta(step_dir) -> dict:
    step_dir = Path(step_dir)
    if not is_complete(step_dir):
        raise CheckpointError(f"{step_dir}: not a complete checkpoint (no orbax commit marker)")
    try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            step_dir.absolute(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{step_dir}: cannot read the checkpoint's metadata: {err}") from err
    meta = restored.meta
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{step_dir}: not a nanoaf2-jax training checkpoint")
    return meta


# ---------------------------------------------------------------------------------------------
# Saving and restoring training state
# ---------------------------------------------------------------------------------------------


class TrainCheckpointer:
    """Saves and restores (params, opt_state, meta) under <output_dir>/checkpoints.

    Saving is synchronous: when save() returns the step is on disk, and the train step, which
    donates its input buffers, can never race a write still reading them.
    """

    def __init__(self, output_dir, keep: int, logger: logging.Logger | None = None):
        self.log = logger or _LOG
        self.dir = checkpoints_dir(output_dir).absolute()
        if jax.process_index() == 0:  # one mover in a multi-process run
            self._quarantine_incomplete(Path(output_dir).absolute() / QUARANTINE_SUBDIR)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.dir, options=options)

    def _quarantine_incomplete(self, quarantine: Path):
        """Move incomplete step directories aside, before orbax lists the steps: orbax would
        count them as checkpoints (its max_to_keep could then delete good ones instead)."""
        _, incomplete = scan(self.dir)
        for path in incomplete:
            quarantine.mkdir(parents=True, exist_ok=True)
            target = quarantine / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.log.warning("ignoring incomplete checkpoint %s (no orbax commit marker); "
                             "moved to %s", path, target)
            shutil.move(path, target)

    def steps(self) -> list[int]:
        return list(scan(self.dir)[0])

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def step_dir(self, step: int) -> Path:
        return self.dir / str(step)

    def save(self, step: int, params, opt_state, meta: dict) -> Path:
        meta = dict(meta, format=FORMAT, step=step)
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()
        return self.step_dir(step)

    def restore(self, step: int, params_like, opt_state_like):
        """(params, opt_state, meta) of `step`; the *_like trees give structure and shapes."""
        step_dir = self.step_dir(step)
        meta = read_meta(step_dir)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(params_like),
                opt_state=ocp.args.StandardRestore(opt_state_like),
                meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, FileNotFoundError) as err:
            if "structure" in str(err).lower():  # orbax: "Structure mismatch", "tree structures do not match"
                # Orbax lists every key of both trees; the cause in practice is one line.
                raise CheckpointError(
                    f"{step_dir}: cannot resume: its optimiser state has another layout than this "
                    "version's (checkpoints written before the torch-exact AdamW of "
                    "training/adamw.py, 2026-12-01, hold optax.adamw's state). Its weights still "
                    "load for sampling, evaluation and export (--checkpoint); to train on, start a "
                    "new run") from None
            raise CheckpointError(f"{step_dir}: cannot restore: {err}") from err
        return restored.params, restored.opt_state, meta

    def close(self):
        self.manager.close()


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def load_for_inference(path, preset: str | None = None):
    """Model weights for sampling: (params, ModelConfig, info dict).

    `path` may be a run directory (its latest complete checkpoint), a checkpoints directory,
    one step directory, or a reference state_dict (.pt/.pth/.npz). A checkpoint carries its own
    config; a state_dict does not, so its model config is that of `preset` (default: 'default').
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        return _load_state_dict_file(path, preset or "default")
    step_dir = _resolve_step_dir(path)
    meta = read_meta(step_dir)
    config = ModelConfig.from_dict(meta["config"]["model"])
    target = template_params(config)
    try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            step_dir.absolute(), args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise CheckpointError(f"{step_dir}: cannot restore the parameters: {err}") from err
    info = {"source": str(step_dir), "kind": "checkpoint", "step": meta["step"],
            "epoch": meta.get("epoch"), "train_config": meta["config"]}
    return restored.params, config, info


def _resolve_step_dir(path: Path) -> Path:
    if is_complete(path):
        return path
    for ckpt_dir in (path / CHECKPOINT_SUBDIR, path):
        latest = latest_complete(ckpt_dir)
        if latest is not None:
            return latest
    looks_like_step = path.name.isdigit() and (
        path.parent.name == CHECKPOINT_SUBDIR
        or any((path / name).exists() for name in (*_ITEMS, _STEP_METADATA_FILE)))
    if looks_like_step:
        raise CheckpointError(f"{path}: incomplete checkpoint (no orbax commit marker)")
    raise CheckpointError(
        f"{path}: not a checkpoint: expected a run directory with complete checkpoints in "
        f"{CHECKPOINT_SUBDIR}/, a checkpoint step directory, or a .pt/.npz state_dict")


def _load_state_dict_file(path: Path, preset: str):
    if not path.name.lower().endswith(_STATE_DICT_SUFFIXES):
        raise CheckpointError(f"{path}: not a checkpoint (expected a run or step directory, "
                              f"or a state_dict ending in {', '.join(_STATE_DICT_SUFFIXES)})")
    config = model_preset(preset)
    try:
        state_dict = load_state_dict(path)
    # numpy and torch raise many kinds of errors on a damaged file (zipfile, pickle, ...).
    except (ImportError, OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile,
            pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: cannot read the state_dict: {err}") from err
    try:
        params = state_dict_to_params(state_dict, config)
    except ConversionError as err:
        raise CheckpointError(
            f"{path}: does not fit the model of preset {preset!r}: {err}") from err
    params = jax.tree_util.tree_map(np.asarray, params)
    info = {"source": os.fspath(path), "kind": "state_dict", "preset": preset}
    return params, config, info
