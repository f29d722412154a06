"""Sequences in, backbone samples out: the machinery behind `python sample.py` and the
evaluation.

Checkpoint loading, the memory check and batched sampling: one compiled call per sequence draws
all N samples, the trunk running once. The sequences come from records.py, the files go out
through output.py, and the command line is cli/sample.py.

Randomness: sample k of record i (both 0-based, records in input order) is drawn from a numpy
generator seeded with (seed, i, k). Sample k of a record is therefore the same structure whatever
--num-samples is, and the same seed always gives the same structures.

Memory: N samples go through in chunks of equal size (`chunk_plan`), the largest whose estimated
peak (memory.py) fits the limit, or --batch-samples; the caller writes each chunk before the next
is drawn, so N is bounded by the disk, not by memory. The trunk runs once per chunk. The last
chunk is filled up with samples N, N+1, ... (drawn and discarded) so that every chunk has the
same shape and the sampler compiles once.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import memory
from ..data.batching import padded_length
from ..model.model_config import ModelConfig
from .records import InputError
from .sampling import NUM_SAMPLE_STEPS, SampleNoise, sample_jit, sampler_for

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


def native_rules(info: dict) -> tuple[bool, bool]:
    """(modified_residues, file_numbering) the checkpoint's run trained with, so that natives
    are read (and numbered for the trunk) as its training structures were; a bare state_dict
    carries no training config: the reference's rules (False, False)."""
    train_config = info.get("train_config") or {}
    return bool(train_config.get("modified_residues", False)), bool(train_config.get("file_numbering", False))


def native_residue_index(protein, file_numbering: bool):
    """The numbering the trunk sees for a native's sequence: its file numbering (gaps are chain
    breaks) when the model trained on it, else None (0..L-1)."""
    if not file_numbering:
        return None
    from ..data.batching import feature_residue_index

    return feature_residue_index(protein.residue_index)


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
                 max_memory_gb: float | None, force: bool, batch_samples: int | None = None) -> int:
    """Samples per compiled call for these records (the smallest over them; chunk_plan), after
    refusing (before any sampling) a record whose estimated peak exceeds the limit even one
    sample at a time (or at --batch-samples)."""
    limit, source = memory_limit(max_memory_gb)
    num_params = memory.parameter_count(config)
    per_call = num_samples if batch_samples is None else min(batch_samples, num_samples)
    for rec in records:
        fits = memory.samples_that_fit(rec.length, config, num_steps, limit, num_params)
        if batch_samples is None and fits is not None:
            per_call = min(per_call, max(fits, 1))
        if not force:
            memory.check_fits(rec.name, rec.length, config, per_call if batch_samples else 1,
                              num_steps, limit, source, num_params=num_params)
    return per_call


def chunk_plan(num_samples: int, per_call: int) -> list[tuple[int, int]]:
    """(first sample, samples kept) per call; every call computes the same padded size
    ceil(N / calls), so no chunk is much smaller than the others."""
    per_call = max(1, min(per_call, num_samples))
    calls = math.ceil(num_samples / per_call)
    size = math.ceil(num_samples / calls)
    return [(first, min(size, num_samples - first)) for first in range(0, num_samples, size)]


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def record_seed(seed: int, index: int) -> tuple[int, int]:
    """The seed of record `index`: depends only on the run's seed and the record's position."""
    return (int(seed), int(index))


def draw_noise(seed: tuple[int, int], num_samples: int, length: int, num_steps: int,
               dtype=np.float32, first: int = 0) -> SampleNoise:
    """Standard normals for samples first .. first + num_samples - 1; sample k comes from its own
    numpy generator seeded with (*seed, k) = (run seed, record index, k), so it does not depend
    on how many samples are drawn with it, nor on the chunk it is drawn in.

    numpy rather than jax.random: a jax draw compiles once per shape (seconds on a CPU, as
    long as compiling the sampler itself), and every new sequence length is a new shape.
    Filled in place, one sample at a time: no float64 copy of the whole draw.
    """
    omega = np.empty((num_samples, length), dtype)
    axis = np.empty((num_samples, length, 3), dtype)
    init = np.empty((num_samples, length, 3), dtype)
    steps = np.empty((num_steps - 1, num_samples, length, 3), dtype)
    for i in range(num_samples):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*seed, first + i])))
        # Fixed draw order; trans_steps last so that the other draws do not depend on --steps.
        omega[i] = rng.standard_normal(length)
        axis[i] = rng.standard_normal((length, 3))
        init[i] = rng.standard_normal((length, 3))
        steps[:, i] = rng.standard_normal((num_steps - 1, length, 3))
    return SampleNoise(omega, axis, init, steps)


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


_KEYS = ("coords_N", "coords_CA", "coords_C", "plddt")


def predict_chunks(params, config: ModelConfig, codes, seed, num_samples: int,
                   num_steps: int = NUM_SAMPLE_STEPS, per_call: int | None = None,
                   residue_index=None, pad_to: int | None = None):
    """Yield (first sample index, result) per chunk (chunk_plan), each result holding numpy
    coords_N/CA/C [n, L, 3] and plddt [n, L] of samples first .. first + n - 1.
    residue_index [L]: the numbering the model sees (default 0..L-1).
    pad_to: sample the sequence padded to this length under a residue mask (bucket_length), so
    that sequences of many lengths share one compilation; the samples are those of the exact
    length up to float rounding, drawn from the same noise."""
    length = int(np.shape(codes)[0])
    sampler = sampler_for(config)
    for first, kept, args in _sampler_calls(params, codes, seed, num_samples, num_steps, per_call,
                                            residue_index, pad_to):
        result = sampler(*args)
        out = {k: np.asarray(result[k][:kept])[:, :length] for k in _KEYS}
        if "contact_probability" in result:  # one per sequence, not per sample
            out["contact_probability"] = np.asarray(result["contact_probability"])[:length, :length]
        yield first, out


def is_padded(length: int, pad_to: int | None) -> bool:
    """Whether a sequence of this length is sampled padded under a residue mask (a different
    program from the unmasked one of its own length)."""
    return pad_to is not None and pad_to != length


def _sampler_calls(params, codes, seed, num_samples, num_steps, per_call, residue_index, pad_to):
    """(first sample, samples kept, the sampler's arguments) of each chunk: the sequence padded
    to pad_to under a mask, its numbering, the noise of the chunk's samples."""
    codes = np.asarray(codes, np.int32)
    length = int(codes.shape[0])
    if pad_to is not None and pad_to < length:
        raise ValueError(f"cannot pad {length} residues to {pad_to}")
    padded = is_padded(length, pad_to)
    plan = chunk_plan(num_samples, per_call or num_samples)
    size = plan[0][1]
    mask = None
    if padded:
        mask = jnp.asarray(np.arange(pad_to) < length)
        if residue_index is not None:  # padding numbered on from the last residue (masked anyway)
            last = int(np.asarray(residue_index)[-1])
            residue_index = np.concatenate([np.asarray(residue_index), last + 1 + np.arange(pad_to - length)])
        codes = np.concatenate([codes, np.zeros(pad_to - length, np.int32)])
    if residue_index is not None:
        residue_index = jnp.asarray(residue_index, jnp.int32)
    for first, kept in plan:
        noise = draw_noise(seed, size, length, num_steps, params_dtype(params), first=first)
        if padded:
            noise = pad_noise(noise, pad_to)
        yield first, kept, (params, jnp.asarray(codes), noise, residue_index, mask)


def compile_sampler(params, config: ModelConfig, length: int, num_samples: int,
                    num_steps: int = NUM_SAMPLE_STEPS, per_call: int | None = None,
                    numbered: bool = False, pad_to: int | None = None) -> None:
    """Compile (or read back from the caches) the program that predict_codes runs for a
    sequence of this length with these options, without sampling; numbered: a residue_index
    is passed. Safe in a thread beside sampling with other programs: XLA compiles without
    Python's GIL, so an evaluation compiles its next length bucket while it scores."""
    residue_index = np.arange(length) if numbered else None
    _, _, args = next(_sampler_calls(params, np.zeros(length, np.int32), (0, 0), num_samples,
                                     num_steps, per_call, residue_index, pad_to))
    sampler = sampler_for(config)
    if hasattr(sampler, "lower"):  # a kept program (exported_programs.CachedJit)
        sampler.lower(*args).compile()
    else:
        params_, sequence, noise, residue_index, mask = args
        sample_jit.lower(params_, sequence, noise, config, residue_index, mask).compile()


def predict_codes(params, config: ModelConfig, codes, seed, num_samples: int,
                  num_steps: int = NUM_SAMPLE_STEPS, per_call: int | None = None,
                  residue_index=None, pad_to: int | None = None) -> dict:
    """All N samples of one sequence (in chunks of per_call, default one call). Returns numpy
    arrays: coords_N/CA/C [N, L, 3] and plddt [N, L] in [0, 1] (with the reference's
    sequence-only head every row is the same), and for a model with a distogram head the
    trunk's contact_probability [L, L]. pad_to: see predict_chunks."""
    parts = [r for _, r in predict_chunks(params, config, codes, seed, num_samples, num_steps,
                                          per_call, residue_index, pad_to)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in _KEYS}
    if "contact_probability" in parts[0]:
        out["contact_probability"] = parts[0]["contact_probability"]
    return out
