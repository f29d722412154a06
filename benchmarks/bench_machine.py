"""The machine a benchmark ran on, and memory and FLOPs as measured or as XLA reports them
(used by bench.py)."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
from pathlib import Path

import jax

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def total_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' (+ uncommitted changes)' if dirty else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description() -> dict:
    import flax
    import jaxlib

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": round(total_memory_gib() or 0.0, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "device": f"{device.platform}: {device.device_kind}",
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "x64": bool(jax.config.jax_enable_x64),
    }


class PeakMemory:
    """Peak memory during a `with` block: device peak on accelerators, process RSS on CPU."""

    def __init__(self):
        self.device = jax.devices()[0]
        self.on_cpu = self.device.platform == "cpu"

    @staticmethod
    def _read_hwm() -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    def __enter__(self):
        if self.on_cpu:
            self.resettable = self._reset_hwm()
        return self

    def __exit__(self, *exc):
        if self.on_cpu:
            hwm = self._read_hwm() if self.resettable else None
            if hwm is not None:
                self.bytes, self.kind = hwm, "peak RSS (VmHWM)"
            else:
                self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                self.kind = "lifetime peak RSS (getrusage)"
        else:
            stats = self.device.memory_stats() or {}
            self.bytes = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
            self.kind = f"{self.device.platform} peak_bytes_in_use (since process start)"
        return False


def memory_analysis(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    return {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("temp", "argument", "output", "generated_code")}


def xla_flops(stage) -> float | None:
    """cost_analysis()['flops'] of a jax Lowered or Compiled stage, None where unavailable."""
    try:
        cost = stage.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None
