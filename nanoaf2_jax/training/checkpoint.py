"""Training checkpoints (orbax) and weights for inference.

Layout: <output_dir>/checkpoints/<step>/{params, opt_state, meta}. `meta` is JSON: step, epoch,
the data-order generator's state, the PRNG key, the dataset's fingerprint and the full
training config, so a checkpoint alone says how to continue the run.

orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, writing
commit_success.txt first. We trust only step directories holding that marker (and the other
files a finished save leaves): a step directory without it was not written by a finished orbax
save and is never restored from.

After the commit each step gets a checksum manifest (manifest.py: size and CRC-32 of every
file); restoring checks it first, so a file damaged later (a disk error, an overwritten file)
is caught even where orbax would read it without complaint. A committed step that fails its
checks or its restore is `CorruptCheckpoint`: the run state sets it aside and falls back to the
next newest (run_state.py).
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

from . import manifest as checksums
from .ema import averaged_params
from .write_errors import quiet_orbax, remove_partial_saves, write_failure

from ..model.model_config import ModelConfig, model_preset
from ..model.convert import ConversionError, load_state_dict, state_dict_to_params, template_params

_LOG = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
QUARANTINE_SUBDIR = "incomplete_checkpoints"
FORMAT = "nanoaf2-jax-train-checkpoint/1"
_ITEMS = ("params", "opt_state", "meta")
# Written beside them when the run keeps an EMA of its weights (ema.py): the weights inference
# loads. Resuming reads the EMA from opt_state; this copy spares inference the optimiser state.
_EMA_ITEM = "ema_params"
_COMMIT_FILE = "commit_success.txt"  # orbax's marker of a finalised save
_STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
_STATE_DICT_SUFFIXES = (".pt", ".pth", ".npz")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or used; the message names the path."""


class CorruptCheckpoint(CheckpointError):
    """A committed checkpoint whose files fail their checksums or do not restore."""


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
    except Exception as err:  # noqa: BLE001 - tensorstore and orbax raise bare Exceptions too
        raise CorruptCheckpoint(
            f"{step_dir}: cannot read the checkpoint's metadata: {_first_line(err)}") from err
    meta = restored.meta
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{step_dir}: not a nanoaf2-jax training checkpoint")
    return meta


def verify(step_dir, items=None) -> bool:
    """Check the step's checksum manifest (True: checked, False: it has none); raises
    CorruptCheckpoint naming the first damaged file. `items`: only these parts (and the step's
    own files), e.g. ("params", "meta") for inference."""
    try:
        return checksums.verify(step_dir, items)
    except checksums.ManifestMismatch as err:
        raise CorruptCheckpoint(f"{step_dir}: {err}") from None


def set_aside(step_dir) -> Path:
    """Rename a corrupt step directory to <step>.corrupt (then .corrupt-2, ...): kept for a
    post-mortem, out of orbax's list of steps, never deleted."""
    step_dir = Path(step_dir)
    target = step_dir.with_name(f"{step_dir.name}.corrupt")
    n = 1
    while target.exists():
        n += 1
        target = step_dir.with_name(f"{step_dir.name}.corrupt-{n}")
    step_dir.rename(target)
    return target


def _first_line(err: BaseException) -> str:
    """The innermost cause's first line: orbax wraps tensorstore's reason ("OUT_OF_RANGE: Error
    reading ... in OCDBT database ...") into a bare Exception about an array index."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip() or type(err).__name__
    line = text.splitlines()[0].split(" [tensorstore_spec=")[0]
    return line if len(line) <= 300 else line[:300] + "..."


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

    def reopen(self):
        """A fresh manager after step directories were renamed under the running one (it lists
        the steps once, when opened)."""
        self.manager.reload()

    def save(self, step: int, params, opt_state, meta: dict) -> Path:
        """Write `step` and its checksum manifest. A failure (a full disk, an unwritable
        directory) leaves no temporary directory and raises WriteFailure: one line."""
        meta = dict(meta, format=FORMAT, step=step)
        last = self.latest_step()
        items = dict(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                     meta=ocp.args.JsonSave(meta))
        ema = averaged_params(opt_state)
        if ema is not None:
            items[_EMA_ITEM] = ocp.args.StandardSave(ema)
        try:
            with quiet_orbax():
                self.manager.save(step, args=ocp.args.Composite(**items))
                self.manager.wait_until_finished()
            if jax.process_index() == 0:
                checksums.write(self.step_dir(step))
        except Exception as err:  # noqa: BLE001 - orbax raises ValueError, OSError, Exception
            remove_partial_saves(self.dir, step)
            if jax.process_index() == 0 and not checksums.has_manifest(self.step_dir(step)):
                # Committed without its manifest, or half-renamed: not a step to resume from.
                shutil.rmtree(self.step_dir(step), ignore_errors=True)
            raise write_failure(f"checkpoint step {step}", self.dir, err, last) from None
        return self.step_dir(step)

    def restore(self, step: int, params_like, opt_state_like):
        """(params, opt_state, meta) of `step`; the *_like trees give structure and shapes.
        CorruptCheckpoint: its files fail their checksums or do not restore."""
        step_dir = self.step_dir(step)
        verify(step_dir)
        meta = read_meta(step_dir)
        try:
            with quiet_orbax():
                restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
                    step_dir, args=ocp.args.Composite(
                        params=ocp.args.StandardRestore(params_like),
                        opt_state=ocp.args.StandardRestore(opt_state_like),
                        meta=ocp.args.JsonRestore()))
        except Exception as err:  # noqa: BLE001 - tensorstore raises bare Exceptions
            if "structure" in str(err).lower():  # orbax: "Structure mismatch", "tree structures do not match"
                # Orbax lists every key of both trees; the cause in practice is one line.
                raise CheckpointError(
                    f"{step_dir}: cannot resume: its optimiser state has another layout than this "
                    "version's (checkpoints written before the torch-exact AdamW of "
                    "training/adamw.py, 2026-12-01, hold optax.adamw's state). Its weights still "
                    "load for sampling, evaluation and export (--checkpoint); to train on, start a "
                    "new run") from None
            raise CorruptCheckpoint(f"{step_dir}: cannot restore: {_first_line(err)}") from err
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
    if is_complete(path):  # one step asked for: that one or an error
        return _load_step_params(path)
    candidates = _candidate_steps(path)
    for i, step_dir in enumerate(candidates):
        try:
            params, config, info = _load_step_params(step_dir)
        except CorruptCheckpoint as err:
            # Reported and skipped, not renamed: a training run may still own this directory
            # (its own --resume sets damaged steps aside).
            _LOG.warning("unusable checkpoint: %s; trying the next older one", err)
            continue
        if i:
            info["skipped_corrupt"] = [str(p) for p in candidates[:i]]
            _LOG.warning("using %s (step %d): the %d newer checkpoint(s) are damaged",
                         step_dir, info["step"], i)
        return params, config, info
    raise CheckpointError(f"{path}: none of its {len(candidates)} checkpoints restores "
                          "(each reported above)")


def init_checkpoint(path) -> tuple[Path, dict]:
    """The step directory a fine-tuning run starts from (TrainConfig.init_from: a run directory,
    its latest complete checkpoint, or a step directory) and that run's training config."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory (--init-from)")
    if path.is_file():
        raise CheckpointError(f"{path}: --init-from needs a training checkpoint (a run or step "
                              "directory): a state_dict carries no model config")
    step_dir = _resolve_step_dir(path)
    return step_dir, read_meta(step_dir)["config"]


def init_params_from(path, params_like):
    """The parameters of checkpoint `path` (see init_checkpoint), checked against the tree and
    shapes of `params_like` (the run's model); CheckpointError naming the path and the first
    differences otherwise."""
    step_dir, _ = init_checkpoint(path)
    params, _, _ = _load_step_params(step_dir)
    have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_leaves_with_path(params_like)}
    diffs = [f"{k}: checkpoint {have.get(k, 'absent')}, model {want.get(k, 'absent')}"
             for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
    if diffs:
        raise CheckpointError(
            f"{step_dir}: its parameters do not fit this run's model ({len(diffs)} differ: "
            f"{'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); --init-from keeps the "
            "checkpoint's architecture")
    return params, step_dir


def _load_step_params(step_dir: Path):
    """The step's weights for sampling: the EMA of a run that keeps one, else the weights."""
    item = _EMA_ITEM if (step_dir / _EMA_ITEM).is_dir() else "params"
    verify(step_dir, items=(item, "meta"))
    meta = read_meta(step_dir)
    config = ModelConfig.from_dict(meta["config"]["model"])
    target = template_params(config)
    try:
        with quiet_orbax():
            restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
                step_dir.absolute(), args=ocp.args.Composite(**{item: ocp.args.StandardRestore(target)}))
    except Exception as err:  # noqa: BLE001 - tensorstore raises bare Exceptions
        raise CorruptCheckpoint(
            f"{step_dir}: cannot restore the parameters: {_first_line(err)}") from err
    info = {"source": str(step_dir), "kind": "checkpoint", "step": meta["step"],
            "epoch": meta.get("epoch"), "train_config": meta["config"],
            "weights": "ema" if item == _EMA_ITEM else "raw"}
    return restored[item], config, info


def _candidate_steps(path: Path) -> list[Path]:
    """Complete steps of a run or checkpoints directory, newest first."""
    for ckpt_dir in (path / CHECKPOINT_SUBDIR, path):
        complete, _ = scan(ckpt_dir)
        if complete:
            return [complete[s] for s in sorted(complete, reverse=True)]
    _resolve_step_dir(path)  # raises the right message
    raise AssertionError("unreachable")


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
