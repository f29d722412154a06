"""The training loop: data, the jitted step, logging, checkpoints and exact resume.

Determinism: the step's PRNG key is fold_in(train_key, step) and the epoch order comes from a
numpy Generator whose state at the start of each epoch is checkpointed, so a resumed run feeds
the same batches with the same noise as an uninterrupted one.

The host waits for the device only to log (every log_every steps), to check a window for
non-finite values before a checkpoint, and at the end; in between, steps are dispatched
asynchronously and their metrics stay on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from .train_config import TrainConfig

from ..data.batching import BatchPlan, filter_by_length
from .checkpoint import TrainCheckpointer, checkpoints_dir, latest_complete, read_meta
from ..model.convert import params_to_state_dict, save_state_dict
from ..data.structures import RCSB_DOWNLOAD_URL, Protein, ensure_pdb_files, load_dataset, parse_structure
from ..model.alphafold2 import count_parameters, init_params
from .train_step import lr_schedule, make_keyed_train_step, make_optimizer

_LOG = logging.getLogger("nanoaf2_jax.train")

DEFAULT_DOWNLOAD_DIR = "data/pdb"  # where the reference's train.py downloads its structures
METRICS_FILE = "metrics.jsonl"
# Config fields a resumed run may change: they do not affect what is computed.
RESUMABLE_CHANGES = ("log_every", "checkpoint_every_epochs", "keep_checkpoints")
_METRIC_NAMES = ("loss", "fape_loss", "trans_loss", "rot_loss", "plddt_loss", "grad_norm")


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to compute (that is TrainConfig)."""

    resume: bool = False
    max_steps: int | None = None  # stop (with a checkpoint) once this many steps are done
    progress: bool | None = None  # progress bar; None: only when stderr is a terminal
    base_url: str = RCSB_DOWNLOAD_URL
    offline: bool = False
    download_dir: str = DEFAULT_DOWNLOAD_DIR


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    total_steps: int
    last_checkpoint: Path | None
    final_model: Path | None
    compilations: int
    steps_per_second: float | None  # between log lines, after the first window


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_proteins(config: TrainConfig, options: RunOptions, log=_LOG) -> list[Protein]:
    """The run's proteins: every structure in data_dir, or the pdb_ids (downloaded if needed)."""
    if config.data_dir is not None:
        source = config.data_dir
        proteins = load_dataset(config.data_dir, logger=log)
    else:
        source = options.download_dir
        paths = ensure_pdb_files(config.pdb_ids, options.download_dir, base_url=options.base_url,
                                 offline=options.offline)
        proteins = [parse_structure(p) for p in paths]
    kept = filter_by_length(proteins, config.min_length, config.max_length, log)
    if not kept:
        raise TrainingError(f"{source}: no protein with {config.min_length} to "
                            f"{config.max_length} residues ({len(proteins)} read)")
    return kept


def dataset_fingerprint(proteins) -> list:
    return [[p.name, p.chain, p.length] for p in proteins]


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


def saved_config(output_dir) -> TrainConfig:
    """The config of the latest complete checkpoint in `output_dir` (for --resume)."""
    latest = latest_complete(checkpoints_dir(output_dir))
    if latest is None:
        raise TrainingError(f"{output_dir}: no complete checkpoint to resume from "
                            f"(looked in {checkpoints_dir(output_dir)})")
    return TrainConfig.from_dict(read_meta(latest)["config"])


def _check_resumable(config: TrainConfig, meta: dict, fingerprint: list, step_dir: Path):
    saved, given = meta["config"], config.to_dict()
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


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


class MetricsLog:
    """<output_dir>/metrics.jsonl: one JSON object per logged step, flushed as written."""

    def __init__(self, path: Path, keep_until_step: int, log=_LOG):
        self.path = path
        self._drop_after(keep_until_step, log)
        self._file = open(path, "a", encoding="utf-8")

    def _drop_after(self, step: int, log):
        """Records past the resumed step came from the interrupted run and are recomputed
        (identically); drop them so the file stays one history. Rewritten atomically."""
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if ln.strip() and _record_step(ln) <= step]
        if len(kept) == len(lines):
            return
        log.info("%s: dropping %d records after step %d (from the interrupted run)",
                 self.path, len(lines) - len(kept), step)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict):
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self):
        self._file.close()


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # an unreadable (e.g. half-written) line is dropped


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _Run:
    """State of one training run; `train()` drives it."""

    def __init__(self, config: TrainConfig, options: RunOptions, proteins, log):
        self.config, self.options, self.log = config, options, log
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.plan = BatchPlan(proteins, config.batch_size, config.pad_to, config.buckets)
        self.fingerprint = dataset_fingerprint(proteins)
        self.spe = self.plan.steps_per_epoch
        self.total_steps = self.spe * config.epochs
        self.stop_step = self.total_steps if options.max_steps is None else min(
            self.total_steps, options.max_steps)
        optim = config.optimisation.optim_config(self.total_steps)
        self.optimizer = make_optimizer(optim)
        self.schedule = lr_schedule(optim)
        self.step_fn = make_keyed_train_step(config.model, self.optimizer,
                                             attention_mask=config.attention_mask, donate=True)
        self.ckpt = TrainCheckpointer(self.out, config.keep_checkpoints, log)
        self.last_checkpoint: Path | None = None
        self.shapes: set = set()
        self.pending: list = []  # (step, epoch, device metrics) not yet fetched
        self.window: list = []  # host metrics since the last log line
        self.rate_marks: list = []  # (step, time) at each log line

    # -- state --------------------------------------------------------------------------------

    def initial_state(self):
        """params, opt_state, train_key, data rng (at the start of the epoch holding `step`), step."""
        base_key = jax.random.PRNGKey(self.config.seed)
        init_key, train_key = jax.random.split(base_key)
        rng = np.random.default_rng(self.config.seed)

        def init(key):
            params = init_params(self.config.model, key)
            return params, self.optimizer.init(params)

        latest = self.ckpt.latest_step()
        if not self.options.resume:
            if latest is not None:
                raise TrainingError(
                    f"{self.ckpt.dir} already holds checkpoints (latest: step {latest}): pass "
                    f"--resume to continue that run, or choose another --output-dir")
            # One compiled call: op-by-op initialisation compiles every op separately (slower).
            params, opt_state = jax.jit(init)(init_key)
            return params, opt_state, train_key, rng, 0
        if latest is None:
            raise TrainingError(f"{self.out}: no complete checkpoint to resume from")
        step_dir = self.ckpt.step_dir(latest)
        params, opt_state = jax.eval_shape(init, init_key)  # shapes only: restored below
        params, opt_state, meta = self.ckpt.restore(latest, params, opt_state)
        _check_resumable(self.config, meta, self.fingerprint, step_dir)
        rng.bit_generator.state = meta["data_rng_state"]
        train_key = np.asarray(meta["train_key"], dtype=np.uint32)
        self.last_checkpoint = step_dir
        self.log.info("resuming from %s (step %d, epoch %d)", step_dir, latest, meta["epoch"])
        return params, opt_state, train_key, rng, latest

    def save(self, step, params, opt_state, rng_state, train_key):
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
        self.last_checkpoint = self.ckpt.save(step, params, opt_state, meta)
        self.log.info("saved checkpoint %s", self.last_checkpoint)

    # -- metrics ------------------------------------------------------------------------------

    def fetch(self, metrics_log: MetricsLog, bar):
        """Bring pending metrics to the host; log the log_every steps; stop on a non-finite one."""
        if not self.pending:
            return
        host = jax.device_get([m for _, _, m in self.pending])
        for (step, epoch, _), values in zip(self.pending, host):
            values = {k: float(values[k]) for k in _METRIC_NAMES}
            if not all(math.isfinite(v) for v in values.values()):
                self.pending = []
                where = (f"the last good checkpoint is {self.last_checkpoint}"
                         if self.last_checkpoint else "no checkpoint was written yet")
                raise TrainingError(
                    f"non-finite loss or gradient at step {step} (epoch {epoch}): "
                    f"{', '.join(f'{k}={v}' for k, v in values.items())}; stopped without "
                    f"saving anything from this step on; {where}")
            self.window.append(values["loss"])
            if step % self.config.log_every == 0:
                self.log_step(step, epoch, values, metrics_log, bar)
        self.pending = []

    def log_step(self, step, epoch, values, metrics_log: MetricsLog, bar):
        now = time.perf_counter()
        prev_step, prev_time = self.rate_marks[-1]
        rate = (step - prev_step) / max(now - prev_time, 1e-9)
        self.rate_marks.append((step, now))
        self.log.info("step=%d epoch=%d loss=%.4f fape=%.3f trans=%.3f rot=%.3f", step, epoch,
                      values["loss"], values["fape_loss"], values["trans_loss"], values["rot_loss"])
        record = {"step": step, "epoch": epoch, **values,
                  "loss_mean": float(np.mean(self.window)),
                  "lr": float(self.schedule(step - 1)),  # the rate this step used
                  "steps_per_sec": rate, "time": time.time()}
        metrics_log.write(record)
        self.window = []
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)

    def steady_rate(self) -> float | None:
        """Steps/s between the first and the last log line. Compilation happened before the
        first step, but the first executions still pay one-time costs (buffer allocation,
        small eager ops), so the first window is left out when there are others."""
        marks = self.rate_marks[1:] if len(self.rate_marks) > 2 else self.rate_marks
        if len(marks) < 2:
            return None
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        try:
            params, opt_state, train_key, rng, step = self.initial_state()
        except BaseException:
            self.ckpt.close()
            raise
        cfg, log = self.config, self.log
        log.info("model: %s parameters; %s", f"{count_parameters(params):,}", self.plan.describe())
        log.info("%d epochs = %d steps; attention mask %s; padding: %s", cfg.epochs,
                 self.total_steps, "on" if cfg.attention_mask else "off (reference)",
                 f"to {cfg.pad_to}" if cfg.pad_to else f"buckets {cfg.buckets}")
        if step < self.stop_step:
            self.compile_all(params, opt_state, train_key)
        metrics_log = MetricsLog(self.out / METRICS_FILE, step, log)
        progress = self.options.progress
        if progress is None:
            progress = sys.stderr.isatty()
        bar = tqdm(total=self.stop_step, initial=step, unit="step", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        self.rate_marks.append((step, time.perf_counter()))
        redirect = _logging_through_tqdm() if progress else contextlib.nullcontext()
        try:
            with redirect:
                params, opt_state, step = self._loop(params, opt_state, train_key, rng, step,
                                                     metrics_log, bar)
        finally:
            bar.close()
            metrics_log.close()
            self.ckpt.close()
        final = None
        if step >= self.total_steps:
            final = self.export(params)
        else:
            log.info("stopped at step %d of %d (--max-steps); continue with --resume", step,
                     self.total_steps)
        cache = getattr(self.step_fn, "_cache_size", None)
        log.info("train step compilations: %d (batch shapes fed: %s)",
                 cache() if cache else len(self.shapes), sorted(self.shapes))
        rate = self.steady_rate()
        if rate:
            log.info("%.3f steps/s (%.1f s per %d-step epoch)", rate,
                     self.spe / rate, self.spe)
        return TrainResult(step, self.total_steps, self.last_checkpoint, final,
                           len(self.shapes), rate)

    def compile_all(self, params, opt_state, train_key):
        """Compile the step for every batch shape up front: no stall mid-epoch when a bucket
        first appears, steps/s measured from the first step on, and an out-of-memory bucket
        fails now rather than hours in."""
        start = time.perf_counter()
        for _, length in self.plan.shapes:
            example = self.plan.empty_batch(length)
            self.step_fn.lower(params, opt_state, example, train_key).compile()
        self.log.info("compiled the train step for %d batch shape(s) in %.1f s",
                      len(self.plan.shapes), time.perf_counter() - start)

    def _loop(self, params, opt_state, train_key, rng, step, metrics_log, bar):
        cfg = self.config
        while step < self.stop_step:
            epoch_index, offset = divmod(step, self.spe)
            epoch_rng_state = rng.bit_generator.state
            order = self.plan.epoch_order(rng)
            for indices in order[offset:]:
                if step >= self.stop_step:
                    break
                batch = self.plan.batch(indices)
                self.shapes.add(batch["sequence"].shape)
                key = jax.random.fold_in(train_key, step)
                params, opt_state, metrics = self.step_fn(params, opt_state, batch, key)
                step += 1
                self.pending.append((step, epoch_index + 1, metrics))
                bar.update(1)
                if step % cfg.log_every == 0:
                    self.fetch(metrics_log, bar)
            at_epoch_end = step % self.spe == 0
            if step >= self.stop_step or (
                    at_epoch_end and (step // self.spe) % cfg.checkpoint_every_epochs == 0):
                self.fetch(metrics_log, bar)  # never checkpoint past a non-finite step
                rng_state = rng.bit_generator.state if at_epoch_end else epoch_rng_state
                self.save(step, params, opt_state, rng_state, train_key)
        self.fetch(metrics_log, bar)
        return params, opt_state, step

    def export(self, params) -> Path:
        suffix = ".pt" if _torch_available() else ".npz"
        path = save_state_dict(params_to_state_dict(params), self.out / f"final_model{suffix}")
        self.log.info("exported the final weights (reference state_dict layout) to %s", path)
        return Path(path)


def train(config: TrainConfig, options: RunOptions = RunOptions(), proteins=None,
          logger: logging.Logger | None = None) -> TrainResult:
    """Train (or resume) one run. `proteins` overrides the config's data source (tests)."""
    log = logger or _LOG
    if proteins is None:
        proteins = load_proteins(config, options, log)
    else:
        proteins = filter_by_length(proteins, config.min_length, config.max_length, log)
        if not proteins:
            raise TrainingError("no protein within the configured length range")
    return _Run(config, options, proteins, log).run()


@contextlib.contextmanager
def _logging_through_tqdm():
    """Log lines go through tqdm.write so they do not break the progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:  # a broken install raises OSError, not ImportError
        return False
    return True
