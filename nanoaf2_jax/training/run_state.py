"""A run's state across processes: fresh parameters or those of its latest checkpoint, the
checkpoints themselves with everything an exact resume needs (the data-order generator's state,
the PRNG key, the dataset's fingerprint, the full config), and the checks that a resumed run
is the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from ..compilation.exported_programs import cached_jit
from ..model.alphafold2 import init_params
from .checkpoint import (CorruptCheckpoint, TrainCheckpointer, checkpoints_dir, init_params_from,
                         read_meta, scan, set_aside, verify)
from .distributed import barrier
from .train_config import TrainConfig, TrainingError

# Config fields a resumed run may change: they do not affect what is computed.
RESUMABLE_CHANGES = ("log_every", "checkpoint_every_epochs", "keep_checkpoints", "tensorboard",
                     "eval_every_epochs", "eval_steps", "eval_dir", "eval_max_proteins",
                     "loader_workers")


def dataset_fingerprint(proteins) -> list:
    return [[p.name, p.chain, p.length] for p in proteins]


def saved_config(output_dir) -> TrainConfig:
    """The config of the newest checkpoint in `output_dir` that passes its checks (for
    --resume; a damaged newer one is reported and set aside when the run restores)."""
    complete, _ = scan(checkpoints_dir(output_dir))
    if not complete:
        raise TrainingError(f"{output_dir}: no complete checkpoint to resume from "
                            f"(looked in {checkpoints_dir(output_dir)})")
    for step in sorted(complete, reverse=True):
        try:
            verify(complete[step])
            return TrainConfig.from_dict(read_meta(complete[step])["config"])
        except CorruptCheckpoint:
            continue
    raise TrainingError(f"{checkpoints_dir(output_dir)}: none of the {len(complete)} checkpoints "
                        f"(steps {', '.join(map(str, complete))}) is readable; nothing to resume from")


def _check_resumable(config: TrainConfig, meta: dict, fingerprint: list, step_dir: Path):
    # Through TrainConfig, so that fields added since the checkpoint was written (the data
    # pipeline's, grad_accum, precision, ...) compare as their defaults, which is what that run
    # computed.
    saved, given = TrainConfig.from_dict(meta["config"]).to_dict(), config.to_dict()
    # Directories may have moved; the dataset fingerprint below checks the proteins instead.
    ignored = (*RESUMABLE_CHANGES, "output_dir", "data_dir")
    changed = [k for k in given if k not in ignored and given[k] != saved.get(k)]
    if changed:
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, given {given[k]!r}" for k in changed)
        raise TrainingError(
            f"{step_dir}: a resumed run must keep its config ({diffs}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change")
    if meta["dataset"] != fingerprint:
        raise TrainingError(f"{step_dir}: the proteins differ from those the run was trained on "
                            f"({len(meta['dataset'])} then, {len(fingerprint)} now)")


class RunState:
    """Where a run starts (step 0 or its latest checkpoint) and each checkpoint it saves."""

    def __init__(self, config: TrainConfig, optimizer, fingerprint: list, steps_per_epoch: int,
                 total_steps: int, out: Path, log, parallel=None, program_key: str | None = None):
        self.config, self.optimizer, self.log = config, optimizer, log
        # parallel.DataParallel: params and optimiser state are created (or restored) replicated
        # over its mesh; None: on the default device.
        self.parallel = parallel
        # The initial state's program is kept traced under this key (the train step's, which
        # names the model, the optimiser and the EMA), so a fresh run traces no initialisation
        # where an earlier one kept it; None: plain jax.jit.
        self.program_key = program_key
        self.fingerprint = fingerprint
        self.spe, self.total_steps = steps_per_epoch, total_steps
        self.out = out
        barrier("nanoaf2_jax:checkpointer")  # orbax's first sync is a 30 s gloo collective
        self.ckpt = TrainCheckpointer(out, config.keep_checkpoints, log)
        self.last_checkpoint: Path | None = None
        self.loader_state: dict | None = None  # the data loader's state, when resumed

    def initial_state(self, resume: bool):
        """params, opt_state, train_key, data rng (at the start of the epoch holding `step`), step."""
        base_key = jax.random.PRNGKey(self.config.seed)
        # Host copies: every process holds the same keys, and a jitted step takes them as
        # replicated inputs.
        init_key, train_key = np.asarray(jax.random.split(base_key))
        replicated = None if self.parallel is None else self.parallel.replicated
        rng = np.random.default_rng(self.config.seed)

        def init(key):
            params = init_params(self.config.model, key)
            return params, self.optimizer.init(params)

        latest = self.ckpt.latest_step()
        if not resume:
            if latest is not None:
                raise TrainingError(
                    f"{self.ckpt.dir} already holds checkpoints (latest: step {latest}): pass "
                    f"--resume to continue that run, or choose another --output-dir")
            if self.config.init_from is not None:
                return (*self._init_from(init, init_key), train_key, rng, 0)
            if self.config.trainable != "all":
                self.log.warning("training only %s of freshly initialised weights: the frozen rest "
                                 "stays random (pass --init-from a trained run)", self.config.trainable)
            # One compiled call: op-by-op initialisation compiles every op separately (slower).
            if self.program_key is None:
                params, opt_state = jax.jit(init, out_shardings=replicated)(init_key)
            else:
                params, opt_state = cached_jit(init, "initial-state", self.program_key,
                                               out_shardings=replicated)(init_key)
            return params, opt_state, train_key, rng, 0
        if latest is None:
            raise TrainingError(f"{self.out}: no complete checkpoint to resume from")
        abstract = jax.eval_shape(init, init_key)  # shapes only: restored below
        if self.parallel is not None:
            abstract = self.parallel.abstract(abstract)
        params, opt_state, meta, latest = self._restore_newest_good(*abstract)
        step_dir = self.ckpt.step_dir(latest)
        _check_resumable(self.config, meta, self.fingerprint, step_dir)
        rng.bit_generator.state = meta["data_rng_state"]
        self.loader_state = meta.get("data_loader_state")
        train_key = np.asarray(meta["train_key"], dtype=np.uint32)
        self.last_checkpoint = step_dir
        self.log.info("resuming from %s (step %d, epoch %d)", step_dir, latest, meta["epoch"])
        return params, opt_state, train_key, rng, latest

    def _init_from(self, init, init_key):
        """A trained checkpoint's weights (TrainConfig.init_from) and fresh optimiser state."""
        params_like, _ = jax.eval_shape(init, init_key)
        params, step_dir = init_params_from(self.config.init_from, params_like)
        params = jax.tree_util.tree_map(lambda x, like: np.asarray(x, like.dtype), params, params_like)
        params = (jax.device_put(params) if self.parallel is None
                  else self.parallel.replicate(params))
        opt_state = jax.jit(self.optimizer.init)(params)
        self.log.info("starting from the weights of %s, with fresh optimiser state", step_dir)
        return params, opt_state

    def _restore_newest_good(self, params_like, opt_state_like):
        """(params, opt_state, meta, step) of the newest checkpoint that passes its checksums and
        restores. Each one that does not is reported in one line and renamed <step>.corrupt."""
        steps = self.ckpt.steps()
        bad = []
        for step in reversed(steps):
            try:
                params, opt_state, meta = self.ckpt.restore(step, params_like, opt_state_like)
                break
            except CorruptCheckpoint as err:
                moved = set_aside(self.ckpt.step_dir(step)) if jax.process_index() == 0 else None
                self.log.warning("unusable checkpoint: %s; set aside as %s", err,
                                 moved.name if moved else f"{step}.corrupt")
                bad.append(step)
        else:
            raise TrainingError(
                f"{self.ckpt.dir}: no checkpoint restores ({len(bad)} tried, set aside as "
                f"{', '.join(f'{s}.corrupt' for s in bad)}); nothing to resume from: start a new "
                f"run in another --output-dir")
        if bad:
            barrier("nanoaf2_jax:set-aside")
            self.ckpt.reopen()
            self.log.warning("resuming from step %d instead of step %d: %d step(s) of training "
                             "lost and recomputed", step, bad[0], bad[0] - step)
        return params, opt_state, meta, step

    def save(self, step, params, opt_state, rng_state, train_key, loader_state=None):
        if self.ckpt.latest_step() == step:
            return
        meta = {
            "epoch": step // self.spe,
            "steps_per_epoch": self.spe,
            "total_steps": self.total_steps,
            # Generator state before drawing the order of the epoch that holds `step`.
            "data_rng_state": rng_state,
            "train_key": [int(x) for x in np.asarray(jax.device_get(train_key))],
            "dataset": self.fingerprint,
            "config": self.config.to_dict(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if loader_state is not None:  # Grain's iterator state (loader 'grain')
            meta["data_loader_state"] = loader_state
        self.last_checkpoint = self.ckpt.save(step, params, opt_state, meta)
        self.log.info("saved checkpoint %s", self.last_checkpoint)

    def close(self):
        self.ckpt.close()
