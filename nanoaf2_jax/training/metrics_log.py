"""What a training run reports: metrics.jsonl (one record per logged step) and the same numbers
as TensorBoard scalars, a log line every log_every steps with the steps/s, and the stop on a
non-finite loss or gradient.

Step metrics stay on the device until they are fetched: every log_every steps, before a
checkpoint and at the end (see trainer.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import jax
import numpy as np

from .train_config import TrainingError

_LOG = logging.getLogger("nanoaf2_jax.train")

METRICS_FILE = "metrics.jsonl"
_METRIC_NAMES = ("loss", "fape_loss", "trans_loss", "rot_loss", "plddt_loss", "grad_norm")


TENSORBOARD_DIR = "tensorboard"
# Record keys that are coordinates of a point, not scalars to plot.
_NOT_SCALARS = ("step", "epoch", "time")


class MetricsWriteError(OSError):
    """metrics.jsonl or the TensorBoard events could not be written (the OSError's cause)."""


class MetricsLog:
    """<output_dir>/metrics.jsonl: one JSON object per logged step, flushed as written; with
    `tensorboard_dir`, every numeric value of each record also as a TensorBoard scalar
    `train/<key>` at its step (tensorboardX: event files without TensorFlow)."""

    def __init__(self, path: Path, keep_until_step: int, log=_LOG, tensorboard_dir: Path | None = None):
        self.path = path
        self._drop_after(keep_until_step, log)
        self._file = open(path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter

            # On resume, hide the interrupted run's events past the resumed step (they are
            # recomputed, as in metrics.jsonl).
            purge = keep_until_step + 1 if keep_until_step > 0 else None
            self._tb = SummaryWriter(logdir=str(tensorboard_dir), purge_step=purge, flush_secs=30)

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
        try:
            self._write(record)
        except OSError as err:
            raise MetricsWriteError(err.errno, err.strerror, str(self.path)) from err

    def _write(self, record: dict):
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = key if "/" in key else f"train/{key}"  # eval/... keys keep their name
                    self._tb.add_scalar(tag, value, global_step=record["step"], walltime=record.get("time"))

    def close(self):
        try:
            self._file.close()
        except OSError:  # the buffered tail of a full disk: already reported by write()
            pass
        if self._tb is not None:
            self._tb.close()


class NullMetricsLog:
    """MetricsLog's interface, writing nothing: the metrics of processes other than the first
    in a multi-process run (the first one writes them)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict):
        pass

    def close(self):
        pass


def _record_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # an unreadable (e.g. half-written) line is dropped


class StepMetrics:
    """Metrics of the dispatched steps, brought to the host in batches, logged and checked."""

    def __init__(self, log_every: int, schedule, log=_LOG):
        self.log_every, self.schedule, self.log = log_every, schedule, log
        self.pending: list = []  # (step, epoch, device metrics) not yet fetched
        self.window: list = []  # host metrics since the last log line
        self.rate_marks: list = []  # (step, time) at each log line
        self.postfix: dict = {}  # shown after the loss in the progress bar (e.g. the eval RMSD)

    def start(self, step: int):
        """Steps/s are measured from here: the run's first step."""
        self.rate_marks.append((step, time.perf_counter()))

    def add(self, step: int, epoch: int, metrics):
        self.pending.append((step, epoch, metrics))

    def fetch(self, metrics_log: MetricsLog, bar, last_checkpoint: Path | None):
        """Bring pending metrics to the host; log the log_every steps; stop on a non-finite one."""
        if not self.pending:
            return
        host = jax.device_get([m for _, _, m in self.pending])
        for (step, epoch, _), values in zip(self.pending, host):
            # The core names always; optional terms (peptide_bond_loss, plddt_decoy_loss) when the loss has them.
            values = {k: float(values[k]) for k in (*_METRIC_NAMES, *sorted(set(values) - set(_METRIC_NAMES)))}
            if not all(math.isfinite(v) for v in values.values()):
                self.pending = []
                where = (f"the last good checkpoint is {last_checkpoint}"
                         if last_checkpoint else "no checkpoint was written yet")
                raise TrainingError(
                    f"non-finite loss or gradient at step {step} (epoch {epoch}): "
                    f"{', '.join(f'{k}={v}' for k, v in values.items())}; stopped without "
                    f"saving anything from this step on; {where}")
            self.window.append(values["loss"])
            if step % self.log_every == 0:
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
        bar.set_postfix(loss=f"{values['loss']:.4f}", **self.postfix, refresh=False)

    def steady_rate(self) -> float | None:
        """Steps/s between the first and the last log line. Compilation happened before the
        first step, but the first executions still pay one-time costs (buffer allocation,
        small eager ops), so the first window is left out when there are others."""
        marks = self.rate_marks[1:] if len(self.rate_marks) > 2 else self.rate_marks
        if len(marks) < 2:
            return None
        (s0, t0), (s1, t1) = marks[0], marks[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)
