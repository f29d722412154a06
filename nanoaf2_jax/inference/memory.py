"""Peak-memory estimate for sampling one sequence, and the memory available to do it in.

Sampling a sequence of length L with N samples runs the Pairformer trunk once (batch 1) and
then the denoiser on N copies. The trunk dominates: its triangular attention builds logits
[H, L, L, L] for every pair row, which grows as L³ while everything else grows as L².

The estimate, in bytes (b = bytes per float, 4 for float32):

    peak = SAFETY · b · ( LOGIT_COPIES · H_pair · L³                       triangular attention
                        + PAIR_COPIES · c_z · L²                            pair activations
                        + N · (D + 2) · H_den · L²                          denoiser pair-bias logits
                        + N · (S + 2) · L · 3 · NOISE_COPIES                sampling noise
                        + N · PLDDT_COPIES · (c_z + 16 + 3 · 64) · L² )     structure pLDDT head
           + b · (number of parameters)
           + RUNTIME_BYTES                                                  JAX, XLA, Python

    H_pair = pairformer_heads, c_z = pair channels, D = num_denoise_blocks,
    H_den = denoise_heads, S = sampling steps, N = samples.

Why these constants (float32, XLA on a CPU, default ModelConfig, N = 1):

- LOGIT_COPIES = 6: the peak resident memory of a sampling process, less what it held before,
  measured at L = 192, 256, 384 and 448 was 6.7, 5.5, 5.4 and 5.4 times the size of one
  [H, L, L, L] logits tensor (0.71 GiB at L = 192 up to 7.25 GiB at L = 448): raw logits,
  logits plus triangle bias, the softmax's exponentials and its output, and the projections
  they come from, are alive together. (XLA's own buffer-assignment report,
  `compiled.memory_analysis()`, claims about 3.2 copies; the real process needs more.)
- PAIR_COPIES = 12: a pair block holds the pair, its LayerNorm, the left/right projections and
  gates, the triangle product and the 4·c_z-wide transition hidden layer at the same time.
- N · (D + 2) · H_den · L²: the conditioning keeps one pair-bias logit tensor per denoiser block
  for each of the N samples, and each step adds attention logits and probabilities.
- SAFETY = 1.25 for what the terms above leave out (allocator fragmentation, small buffers),
  and RUNTIME_BYTES = 1 GiB for the process itself (Python, JAX and the compiler: 0.5 GiB
  measured).

- PLDDT_COPIES = 2 (only with plddt_head 'structure'): that head reads the trunk's pair
  representation once per sample ([N, L, L, c_z], its 64-wide projections and the 16 distance
  bins). This per-sample term was missing: `sample.py --num-samples 100000` at L = 46 passed the
  check and was killed for memory. Measured (default model, L = 46, 10 steps, one call): peak
  RSS grows by 3.4 MiB per sample (282 MiB at N = 64, 939 MiB at N = 256); the estimate's
  per-sample term is 6.3 MB, 1.75 times that. NOISE_COPIES = 3: the host draw, the device copy
  and the scan's slice.

N is no longer bounded by the estimate: predict.py samples in chunks of `samples_that_fit`.

With these, the estimate is 1.5 to 2 times the measured peak (e.g. 11 GiB for 7.5 GiB at
L = 448); accelerators fuse more and need less. It is used to refuse a length before the
process dies of an out-of-memory error minutes into compilation or sampling.
"""

from __future__ import annotations

import math
import os

from ..model.model_config import ModelConfig

GIB = 1024**3
LOGIT_COPIES = 6
PAIR_COPIES = 12
SAFETY = 1.25
RUNTIME_BYTES = 1 * GIB
PLDDT_COPIES = 2
NOISE_COPIES = 3
_PLDDT_HIDDEN = 64 + 16 + 3 * 64  # confidence.py: bins and projections beside c_z


class MemoryLimitError(ValueError):
    """A sequence whose estimated peak memory exceeds the limit; the message says how to override."""


def parameter_count(config: ModelConfig) -> int:
    # Imported here: shapes come from an abstract init, which pulls in the whole model.
    import jax

    from ..model.convert import template_params

    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(template_params(config)))


def estimate_peak_bytes(length: int, config: ModelConfig, num_samples: int = 1,
                        num_steps: int = 100, bytes_per_float: int = 4,
                        num_params: int | None = None) -> int:
    """Estimated peak bytes of sampling one sequence of `length` residues (see module doc)."""
    L, N = int(length), int(num_samples)
    activations = (
        LOGIT_COPIES * config.pairformer_heads * L**3
        + PAIR_COPIES * config.c_z * L**2
        + N * (config.num_denoise_blocks + 2) * config.denoise_heads * L**2
        + N * (num_steps + 2) * L * 3 * NOISE_COPIES
        + (N * PLDDT_COPIES * (config.c_z + _PLDDT_HIDDEN) * L**2
           if config.plddt_head == "structure" else 0)
    )
    if num_params is None:
        num_params = parameter_count(config)
    return int(SAFETY * bytes_per_float * activations + bytes_per_float * num_params
               + RUNTIME_BYTES)


def samples_that_fit(length: int, config: ModelConfig, num_steps: int, limit_bytes: int | None,
                     num_params: int | None = None) -> int | None:
    """The most samples of one call whose estimate fits `limit_bytes` (0: not even one; None: no
    limit known). The estimate is affine in N."""
    if limit_bytes is None:
        return None
    if num_params is None:
        num_params = parameter_count(config)
    one = estimate_peak_bytes(length, config, 1, num_steps, num_params=num_params)
    per_sample = estimate_peak_bytes(length, config, 2, num_steps, num_params=num_params) - one
    if one > limit_bytes:
        return 0
    return 1 + int((limit_bytes - one) // max(per_sample, 1))


def available_memory_bytes() -> tuple[int | None, str]:
    """(bytes, where the number came from) for the default JAX device; (None, reason) if unknown.

    On an accelerator the device's own memory limit counts; on the CPU, MemAvailable from
    /proc/meminfo (free plus reclaimable cache: what can be allocated without swapping), else
    the physical memory from os.sysconf.
    """
    accel = _accelerator_memory()
    if accel is not None:
        return accel
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and page_size > 0:
            return pages * page_size, "physical memory (os.sysconf)"
    except (ValueError, OSError, AttributeError):
        pass
    return None, "unknown"


def _accelerator_memory():
    try:
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return None
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return (int(limit), f"{device.platform} device memory limit") if limit else None
    except Exception:  # memory_stats is optional per backend; fall back to host memory
        return None


def format_gib(num_bytes: float) -> str:
    return f"{num_bytes / GIB:.2f} GiB"


def check_fits(name: str, length: int, config: ModelConfig, num_samples: int, num_steps: int,
               limit_bytes: int | None, limit_source: str, num_params: int | None = None) -> int:
    """Estimated bytes for this record; raises MemoryLimitError when over `limit_bytes`."""
    need = estimate_peak_bytes(length, config, num_samples, num_steps, num_params=num_params)
    if limit_bytes is not None and need > limit_bytes:
        samples = f"{num_samples} sample{'s' if num_samples != 1 else ''}"
        raise MemoryLimitError(
            f"record {name!r} ({length} residues, {samples}) needs an estimated "
            f"{format_gib(need)} but the limit is {format_gib(limit_bytes)} ({limit_source}); "
            f"raise it with --max-memory-gb or skip the check with --force"
        )
    return need
