"""Sequences in, backbone samples out: the machinery behind `python sample.py` and the
evaluation.

Checkpoint loading, the memory check and batched sampling: one compiled call per sequence draws
all N samples, the trunk running once. The sequences come from records.py, the files go out
through output.py, and the command line is cli/sample.py.

Randomness: sample k of record i (both 0-based, records in input order) is drawn from a numpy
generator seeded with (seed, i, k). Sample k of a record is therefore the same structure whatever
--num-samples is, and the same seed always gives the same structures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import memory
from ..data.batching import padded_length
from ..model.model_config import ModelConfig
from .records import InputError
from .sampling import NUM_SAMPLE_STEPS, SampleNoise, sample_jit

# Sampling length buckets: one compilation per edge. Finer than training's above 96 residues,
# where the trunk's O(L^3) work makes padding cost more than the extra compilations.
SAMPLING_BUCKETS = (32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 256)


# ---------------------------------------------------------------------------------------------
# Checkpoint
# ---------------------------------------------------------------------------------------------


def load_model(checkpoint, preset: str | None = None):
    """(params, ModelConfig, info) from an orbax run or step directory, or a reference
    state_dict (.pt/.pth/.npz, whose config comes from `preset`). Any failure is an
    InputError saying what is wrong with which checkpoint."""
    path = Path(checkpoint)
    if not path.exists():
        raise InputError(f"checkpoint {path}: not found")
    from ..training.checkpoint import load_for_inference  # here: orbax is only needed to load

    try:
        params, config, info = load_for_inference(str(path), preset=preset)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - the loader's reason, one line, with the path
        message = str(err) or type(err).__name__
        if str(path) not in message:
            message = f"checkpoint {path}: {message}"
        raise InputError(message) from err
    return params, config, dict(info or {})


def with_sampling_options(config: ModelConfig, args) -> ModelConfig:
    """The model config with the command line's sampling options (--eta) applied."""
    if getattr(args, "eta", None) is None:
        return config
    return dataclasses.replace(config, sampling_eta=args.eta)


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def memory_limit(max_memory_gb: float | None) -> tuple[int | None, str]:
    if max_memory_gb is not None:
        return int(max_memory_gb * memory.GIB), f"--max-memory-gb {max_memory_gb:g}"
    return memory.available_memory_bytes()


def check_memory(records, config: ModelConfig, num_samples: int, num_steps: int,
                 max_memory_gb: float | None, force: bool) -> None:
    """Refuse (before any sampling) records whose estimated peak memory exceeds the limit."""
    if force:
        return
    limit, source = memory_limit(max_memory_gb)
    num_params = memory.parameter_count(config)
    for rec in records:
        memory.check_fits(rec.name, rec.length, config, num_samples, num_steps, limit, source,
                          num_params=num_params)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def record_seed(seed: int, index: int) -> tuple[int, int]:
    """The seed of record `index`: depends only on the run's seed and the record's position."""
    return (int(seed), int(index))


def draw_noise(seed: tuple[int, int], num_samples: int, length: int, num_steps: int,
               dtype=np.float32) -> SampleNoise:
    """Standard normals for N samples; sample k comes from its own numpy generator seeded with
    (*seed, k) = (run seed, record index, k), so it does not depend on how many samples are drawn with it.

    numpy rather than jax.random: a jax draw compiles once per shape (seconds on a CPU, as
    long as compiling the sampler itself), and every new sequence length is a new shape.
    """
    parts = []
    for k in range(num_samples):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*seed, k])))
        # Fixed draw order; trans_steps last so that the other draws do not depend on --steps.
        parts.append((rng.standard_normal(length), rng.standard_normal((length, 3)),
                      rng.standard_normal((length, 3)),
                      rng.standard_normal((num_steps - 1, length, 3))))
    omega, axis, init, steps = (np.stack(x).astype(dtype) for x in zip(*parts))
    return SampleNoise(omega, axis, init, np.ascontiguousarray(np.swapaxes(steps, 0, 1)))


def params_dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


def bucket_length(length: int, buckets=SAMPLING_BUCKETS) -> int:
    """The length a sequence is padded to for sampling: the smallest edge that holds it (past
    the last, the next multiple of 32). Every sequence of a bucket shares one compilation."""
    return padded_length(length, None, buckets)


def pad_noise(noise: SampleNoise, length: int) -> SampleNoise:
    """Noise of L residues extended to `length`. The padding's values never reach a real residue;
    they are chosen finite everywhere (a zero rotation axis would be normalised into NaN, and a
    NaN survives multiplication by a zero mask)."""
    pad = length - noise.rot_omega.shape[1]

    def extend(x, axis, value):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        return np.pad(x, widths, constant_values=value)

    axis = extend(noise.rot_axis, 1, 0.0)
    axis[:, length - pad:, 0] = 1.0
    return SampleNoise(extend(noise.rot_omega, 1, 1.0), axis, extend(noise.trans_init, 1, 0.0),
                       extend(noise.trans_steps, 2, 0.0))


def predict_codes(params, config: ModelConfig, codes, seed, num_samples: int,
                  num_steps: int = NUM_SAMPLE_STEPS, pad_to: int | None = None) -> dict:
    """All N samples of one sequence in one compiled call. Returns numpy arrays:
    coords_N/CA/C [N, L, 3] and plddt [N, L] in [0, 1] (with the reference's sequence-only head
    every row is the same).

    pad_to: sample the sequence padded to this length under a residue mask (bucket_length), so
    that sequences of many lengths share one compilation; the samples are those of the exact
    length up to float rounding, drawn from the same noise."""
    codes = np.asarray(codes, np.int32)
    length = int(codes.shape[0])
    noise = draw_noise(seed, num_samples, length, num_steps, params_dtype(params))
    if pad_to is None or pad_to == length:
        result = sample_jit(params, jnp.asarray(codes), noise, config)
    else:
        if pad_to < length:
            raise ValueError(f"cannot pad {length} residues to {pad_to}")
        padded = np.concatenate([codes, np.zeros(pad_to - length, np.int32)])
        mask = np.arange(pad_to) < length
        result = sample_jit(params, jnp.asarray(padded), pad_noise(noise, pad_to), config, jnp.asarray(mask))
    return {k: np.asarray(result[k])[:, :length] for k in ("coords_N", "coords_CA", "coords_C", "plddt")}
