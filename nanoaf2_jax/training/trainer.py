"""The training loop: data, the jitted step, logging, checkpoints and exact resume.

Determinism: the step's PRNG key is fold_in(train_key, step) and the epoch order comes from a
numpy Generator whose state at the start of each epoch is checkpointed, so a resumed run feeds
the same batches with the same noise as an uninterrupted one.

The host waits for the device only to log (every log_every steps), to check a window for
non-finite values before a checkpoint, and at the end; in between, steps are dispatched
asynchronously and their metrics stay on the device.

The pieces: run_state.py starts a run or resumes it and writes its checkpoints,
metrics_log.py fetches, logs and checks the step metrics, and this module runs the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from ..data.download import RCSB_DOWNLOAD_URL
from ..model.alphafold2 import count_parameters
from ..model.convert import (layers_beyond_reference, params_to_state_dict, save_state_dict,
                             tensors_beyond_reference)
from .data_source import TrainingData, training_data
from .metrics_log import (METRICS_FILE, TENSORBOARD_DIR, MetricsLog, MetricsWriteError,
                          NullMetricsLog, StepMetrics)
from .mixed_precision import compute_dtype_of
from .parallel import DataParallel, make_parallel_train_step
from .run_state import RunState
from .train_config import TrainConfig, TrainingError
from .ema import sampling_params, with_params_ema
from .train_step import lr_schedule, make_optimizer
from .trainable import restrict
from .write_errors import write_failure
from .training_sequences import write_sequences

_LOG = logging.getLogger("nanoaf2_jax.train")

DEFAULT_DOWNLOAD_DIR = "data/pdb"  # where the reference's train.py downloads its structures


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to what to compute (that is TrainConfig)."""

    resume: bool = False
    max_steps: int | None = None  # stop (with a checkpoint) once this many steps are done
    progress: bool | None = None  # progress bar; None: only when stderr is a terminal
    base_url: str = RCSB_DOWNLOAD_URL
    offline: bool = False
    download_dir: str = DEFAULT_DOWNLOAD_DIR
    # evaluator(params, model_config, proteins, step, epoch) -> {'eval/...': value}, called every
    # config.eval_every_epochs; with a .plot(metrics_path) method. train.py builds one from
    # evaluation/during_training.py (sampling sits above this package).
    evaluator: object | None = None


@dataclasses.dataclass(frozen=True)
class TrainResult:
    step: int
    total_steps: int
    last_checkpoint: Path | None
    final_model: Path | None
    compilations: int
    steps_per_second: float | None  # between log lines, after the first window


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _Run:
    """State of one training run; `train()` drives it."""

    def __init__(self, config: TrainConfig, options: RunOptions, data: TrainingData, log):
        self.config, self.options, self.log = config, options, log
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        # Every device of every process (parallel.py); batch_size is the global batch.
        self.parallel = DataParallel()
        self.parallel.check_batch_size(config.batch_size)
        # The data hook (data_source.py): a BatchPlan in memory, or Grain batches of a cache.
        # One optimiser step takes grad_accum batches' worth of proteins, split inside the step.
        self.proteins = data.proteins
        self.plan = data.plan
        self.fingerprint = data.fingerprint
        self.sequences = data.sequences
        self.spe = self.plan.steps_per_epoch
        self.total_steps = self.spe * config.epochs
        self.stop_step = self.total_steps if options.max_steps is None else min(
            self.total_steps, options.max_steps)
        optim = config.optimisation.optim_config(self.total_steps)
        self.optimizer = with_params_ema(restrict(make_optimizer(optim), config.trainable),
                                         config.optimisation.ema_decay)
        # Everything the step's and the initial state's programs depend on besides the code and
        # the arguments' shapes (exported_programs.py keeps them under this key).
        program_key = repr((config.model, optim, config.attention_mask, config.grad_accum,
                            config.precision, self.total_steps, config.trainable,
                            config.optimisation.ema_decay))
        self.step_fn = make_parallel_train_step(
            config.model, self.optimizer, self.parallel, attention_mask=config.attention_mask,
            grad_accum=config.grad_accum, compute_dtype=compute_dtype_of(config.precision),
            donate=True, total_steps=self.total_steps, trainable=config.trainable,
            cache_key=program_key)
        self.state = RunState(config, self.optimizer, self.fingerprint, self.spe, self.total_steps,
                              self.out, log, parallel=self.parallel, program_key=program_key)
        # Only the first process writes logs, metrics and the exported model; every process
        # takes part in the steps and in orbax's checkpoints.
        self.primary = jax.process_index() == 0
        self.metrics = StepMetrics(config.log_every, lr_schedule(optim), log)
        self.shapes: set = set()

    def run(self) -> TrainResult:
        try:
            params, opt_state, train_key, rng, step = self.state.initial_state(self.options.resume)
        except BaseException:
            self.state.close()
            raise
        cfg, log = self.config, self.log
        if hasattr(self.plan, "start"):  # Grain: position the iterator (checkpointed state)
            self.plan.start(self.total_steps, step, self.state.loader_state)
        if self.primary and self.sequences is not None:  # for sampling's nearest-sequence identity
            write_sequences(self.out, self.sequences())
        log.info("model: %s parameters; %s", f"{count_parameters(params):,}", self.plan.describe())
        log.info("%d epochs = %d steps; attention mask %s; padding: %s", cfg.epochs,
                 self.total_steps, "on" if cfg.attention_mask else "off (reference)",
                 f"to {cfg.pad_to}" if cfg.pad_to else f"buckets {cfg.buckets}")
        log.info("%s; batch %d x %d accumulated; precision %s", self.parallel.describe(),
                 cfg.batch_size, cfg.grad_accum, cfg.precision)
        if step < self.stop_step:
            self.compile_all(params, opt_state, train_key)
        if self.primary:
            metrics_log = MetricsLog(self.out / METRICS_FILE, step, log,
                                     tensorboard_dir=self.out / TENSORBOARD_DIR if cfg.tensorboard else None)
        else:
            metrics_log = NullMetricsLog(self.out / METRICS_FILE)
        progress = self.options.progress
        if progress is None:
            progress = sys.stderr.isatty()
        bar = tqdm(total=self.stop_step, initial=step, unit="step", disable=not progress,
                   dynamic_ncols=True, smoothing=0.1)
        self.metrics.start(step)
        redirect = _logging_through_tqdm() if progress else contextlib.nullcontext()
        try:
            with redirect:
                params, opt_state, step = self._loop(params, opt_state, train_key, rng, step,
                                                     metrics_log, bar)
        except MetricsWriteError as err:
            raise write_failure("the step metrics", err.filename, err,
                                self.state.ckpt.latest_step()) from None
        finally:
            bar.close()
            metrics_log.close()
            self.state.close()
            getattr(self.plan, "close", lambda: None)()  # Grain's threads or processes
        final = None
        if step >= self.total_steps and self.primary:
            final = self.export(sampling_params(params, opt_state))
        else:
            log.info("stopped at step %d of %d (--max-steps); continue with --resume", step,
                     self.total_steps)
        cache = getattr(self.step_fn, "_cache_size", None)
        log.info("train step compilations: %d (batch shapes fed: %s)",
                 cache() if cache else len(self.shapes), sorted(self.shapes))
        rate = self.metrics.steady_rate()
        if rate:
            log.info("%.3f steps/s (%.1f s per %d-step epoch)", rate,
                     self.spe / rate, self.spe)
        return TrainResult(step, self.total_steps, self.state.last_checkpoint, final,
                           len(self.shapes), rate)

    def compile_all(self, params, opt_state, train_key):
        """Compile the step for every batch shape up front: no stall mid-epoch when a bucket
        first appears, steps/s measured from the first step on, and an out-of-memory bucket
        fails now rather than hours in."""
        start = time.perf_counter()

        def compile_for(length):
            example = self.parallel.put_batch(self.plan.empty_batch(length))
            self.step_fn.lower(params, opt_state, example, train_key, np.int32(0)).compile()

        lengths = [length for _, length in self.plan.shapes]
        # XLA compiles, and reads compiled programs back, without the GIL: one thread per core
        # overlaps the shapes (a warm start spends most of its time reading them back). Runs of
        # several processes keep the serial order, the same in every process.
        workers = min(len(lengths), os.cpu_count() or 1) if jax.process_count() == 1 else 1
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(compile_for, lengths))
        else:
            for length in lengths:
                compile_for(length)
        read = getattr(self.step_fn, "read", None)  # exported_programs.CachedJit's counters
        kept = "" if read is None else (
            f" ({read} read back traced, {self.step_fn.exported} traced and kept)")
        self.log.info("compiled the train step for %d batch shape(s) in %.1f s%s",
                      len(self.plan.shapes), time.perf_counter() - start, kept)

    def _loop(self, params, opt_state, train_key, rng, step, metrics_log, bar):
        cfg = self.config
        while step < self.stop_step:
            epoch_index, offset = divmod(step, self.spe)
            epoch_rng_state = rng.bit_generator.state
            order = self.plan.epoch_order(rng)
            mark = False  # a mid-epoch checkpoint or evaluation is due
            for indices in order[offset:]:
                if step >= self.stop_step or mark:
                    break
                batch = self.parallel.put_batch(self.plan.batch(indices))
                self.shapes.add(batch["sequence"].shape)
                # The step's key is fold_in(train_key, step), taken inside the step.
                params, opt_state, metrics = self.step_fn(params, opt_state, batch, train_key,
                                                          np.int32(step))
                step += 1
                self.metrics.add(step, epoch_index + 1, metrics)
                bar.update(1)
                if step % cfg.log_every == 0:
                    self.metrics.fetch(metrics_log, bar, self.state.last_checkpoint)
                mark = _every(step, cfg.checkpoint_every_steps) or _every(step, cfg.eval_every_steps)
            at_epoch_end = step % self.spe == 0
            if not at_epoch_end:
                # The rest of this epoch is drawn again from its start state (as on --resume).
                rng.bit_generator.state = epoch_rng_state
            if step >= self.stop_step or _every(step, cfg.checkpoint_every_steps) or (
                    at_epoch_end and (step // self.spe) % cfg.checkpoint_every_epochs == 0):
                # Never checkpoint past a non-finite step.
                self.metrics.fetch(metrics_log, bar, self.state.last_checkpoint)
                rng_state = rng.bit_generator.state if at_epoch_end else epoch_rng_state
                self.state.save(step, params, opt_state, rng_state, train_key,
                                loader_state=getattr(self.plan, "iterator_state", lambda: None)())
            if (at_epoch_end and cfg.eval_every_epochs and (step // self.spe) % cfg.eval_every_epochs == 0) \
                    or _every(step, cfg.eval_every_steps):
                self.evaluate(sampling_params(params, opt_state), step, metrics_log, bar)
        self.metrics.fetch(metrics_log, bar, self.state.last_checkpoint)
        return params, opt_state, step

    def evaluate(self, params, step, metrics_log, bar):
        """Sample and score with the current weights (their EMA, when kept); the record goes
        beside the step metrics."""
        evaluator = self.options.evaluator
        if evaluator is None or not self.primary:
            return
        self.metrics.fetch(metrics_log, bar, self.state.last_checkpoint)  # keep the file in order
        epoch = step // self.spe
        if jax.process_count() > 1:  # sample on this process alone, from a host copy
            params = jax.device_get(params)
        proteins = self.proteins
        if self.config.eval_train_proteins is not None:
            proteins = proteins[:self.config.eval_train_proteins]
        record = evaluator(params, self.config.model, proteins, step, epoch)
        metrics_log.write({"step": step, "epoch": epoch, **record, "time": time.time()})
        if "eval/train/ca_rmsd_mean" in record:
            self.metrics.postfix["rmsd"] = f"{record['eval/train/ca_rmsd_mean']:.2f}A"
        evaluator.plot(metrics_log.path)

    def export(self, params) -> Path:
        suffix = ".pt" if _torch_available() else ".npz"
        target = self.out / f"final_model{suffix}"
        for stale in self.out.glob("final_model.*.tmp-*"):  # of a run killed while exporting
            stale.unlink(missing_ok=True)
        state_dict = params_to_state_dict(params)
        try:
            path = save_state_dict(state_dict, target)
        except OSError as err:  # the final checkpoint is on disk: --resume exports again
            raise write_failure("the final model", target, err, self.state.ckpt.latest_step()) from None
        self.log.info("exported the final weights (reference state_dict layout) to %s", path)
        extra = tensors_beyond_reference(self.config.model, state_dict)
        if extra:
            self.log.info("note: %d of its tensors (%s) belong to layers the reference's model does "
                          "not have; the reference loads it with strict=False, without them (and with its "
                          "own layers that they replace left at their initial values)",
                          len(extra), ", ".join(f"{m}.*" for m in layers_beyond_reference(self.config.model, state_dict)))
        return Path(path)


def train(config: TrainConfig, options: RunOptions = RunOptions(), proteins=None,
          logger: logging.Logger | None = None) -> TrainResult:
    """Train (or resume) one run. `proteins` overrides the config's data source (tests)."""
    log = logger or _LOG
    return _Run(config, options, training_data(config, options, log, proteins), log).run()


def _every(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


@contextlib.contextmanager
def _logging_through_tqdm():
    """Log lines go through tqdm.write so they do not break the progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield


def _torch_available() -> bool:
    """Whether torch is installed (the export writes .pt, else .npz). Not imported: that takes
    seconds, and the .pt writer does not need it."""
    return importlib.util.find_spec("torch") is not None
