"""Reverse SE(3) diffusion: sequence -> backbone frames, N samples at once, in one compiled call.

The trunk and all step-invariant denoiser work (single conditioning, pair-bias logits) run once;
the reverse steps run inside `lax.scan`. Noise is explicit (`SampleNoise`), with a key-based
wrapper drawing it.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..compilation import exported_programs
from ..compilation.exported_programs import cached_jit
from ..model.model_config import ModelConfig
from ..diffusion.reverse import reverse_diffusion
from ..diffusion.se3 import from_diffusion_space
from ..model.losses import plddt_from_logits
from ..model.alphafold2 import AlphaFold2
from ..model.distogram import contact_probability
from ..geometry.rigid import Rigid, backbone_from_frames, masked_centroid
from ..training.train_step import nn_apply

NUM_SAMPLE_STEPS = 100


class SampleNoise(NamedTuple):
    rot_omega: jnp.ndarray  # [N, L]      IGSO3 angle normals of the initial frames (t = 1)
    rot_axis: jnp.ndarray  # [N, L, 3]
    trans_init: jnp.ndarray  # [N, L, 3]   initial translation normals
    trans_steps: jnp.ndarray  # [S - 1, N, L, 3]  one per step with t_next > 0


def draw_sample_noise(key, num_samples: int, length: int, num_steps: int = NUM_SAMPLE_STEPS, dtype=jnp.float32):
    ks = jax.random.split(key, 4)
    n, L = num_samples, length
    return SampleNoise(
        jax.random.normal(ks[0], (n, L), dtype),
        jax.random.normal(ks[1], (n, L, 3), dtype),
        jax.random.normal(ks[2], (n, L, 3), dtype),
        jax.random.normal(ks[3], (num_steps - 1, n, L, 3), dtype),
    )


def sample(params, sequence, noise: SampleNoise, config: ModelConfig, residue_index=None, mask=None):
    """Sequence [L] -> dict of frames_rots [N, L, 3, 3], frames_trans, coords_N/CA/C [N, L, 3],
    plddt [N, L] (the same row for every sample with the reference's sequence-only head), and
    for a model with a distogram head the trunk's contact_probability [L, L] (one per sequence). The number of steps is the leading size of noise.trans_steps plus one.
    residue_index [L]: the residue numbering the trunk sees (a model trained with
    --file-numbering sees chain breaks as gaps); default 0..L-1, as the reference.

    mask [L] (bool): the real residues of a sequence padded to a length bucket, so that one
    compilation serves every length up to it. Padding is then left out of every attention,
    triangular update, centroid and CA-trace frame, and the real residues' samples do not depend
    on it (up to float rounding; tests/test_bucketed_sampling.py). None: all residues are real."""
    n, L = noise.rot_omega.shape
    dtype = noise.trans_init.dtype
    model = AlphaFold2(config)
    seq = jnp.asarray(sequence)[None]
    residue_index = jnp.arange(L)[None] if residue_index is None else jnp.asarray(residue_index)[None]
    batch_mask = None if mask is None else jnp.asarray(mask, bool)[None]

    def trunk(m):
        single, pair = m.trunk(seq, residue_index, batch_mask)
        contacts = contact_probability(m.distogram_logits(pair))[0] if config.distogram_weight > 0 else None
        return single, pair, m.condition(single, pair, batch_mask), contacts

    single, pair, cond, contacts = nn_apply(model, params, trunk)
    # One trunk pass serves all N samples: broadcast its conditioning over the sample axis.
    cond = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *x.shape[1:])), cond)

    def denoise(frames, t, *previous):
        return nn_apply(model, params, lambda m: m.denoise(frames, jnp.full((n,), t, dtype), cond, *previous))

    frames = reverse_diffusion(denoise, noise.rot_omega, noise.rot_axis, noise.trans_init, noise.trans_steps,
                               config.rotation_noise, config.rot_sigma_max, config.sampling_eta,
                               config.self_conditioning)
    # Back to Å; a model of centred structures gives centred samples (exactly, here).
    frames = from_diffusion_space(frames, config.coord_scale)
    if config.center_coords:
        sample_mask = None if mask is None else jnp.broadcast_to(batch_mask, (n, L))
        frames = Rigid(frames.rots, frames.trans - masked_centroid(frames.trans, sample_mask)[..., None, :])
    coords_N, coords_CA, coords_C = backbone_from_frames(frames)
    if config.plddt_head == "structure":  # each sample judged on its own CA atoms
        # The n samples of the one sequence row: the head projects its pair once for all of them.
        logits = nn_apply(model, params, lambda m: m.plddt_logits(single, pair, coords_CA, batch_mask))
    else:
        logits = jnp.broadcast_to(nn_apply(model, params, lambda m: m.plddt_logits(single)), (n, L, config.num_plddt_bins))
    extra = {} if contacts is None else {"contact_probability": contacts}
    return {
        **extra,
        "frames_rots": frames.rots,
        "frames_trans": frames.trans,
        "coords_N": coords_N,
        "coords_CA": coords_CA,
        "coords_C": coords_C,
        "plddt": plddt_from_logits(logits),
    }


@functools.partial(jax.jit, static_argnames=("config",))
def sample_jit(params, sequence, noise: SampleNoise, config: ModelConfig, residue_index=None, mask=None):
    return sample(params, sequence, noise, config, residue_index, mask)


_KEPT_SAMPLERS: dict = {}


def sampler_for(config: ModelConfig):
    """(params, sequence, noise, residue_index, mask) -> sample_jit's result for this config,
    through a program kept on disk where the compilation cache is on (exported_programs.py): a
    warm `sample.py` or evaluation then skips tracing the sampler too."""
    directory = exported_programs.directory()
    if directory is None:
        return functools.partial(_sample_positional, config=config)
    key = (config, directory)
    if key not in _KEPT_SAMPLERS:
        _KEPT_SAMPLERS[key] = cached_jit(functools.partial(_sample_positional, config=config, jit=False),
                                         "sampler", repr(config))
    return _KEPT_SAMPLERS[key]


def _sample_positional(params, sequence, noise, residue_index=None, mask=None, *, config, jit=True):
    return (sample_jit if jit else sample)(params, sequence, noise, config, residue_index, mask)


def sampler_compilations() -> int:
    """Programs the samplers hold: sample_jit's (jax's private counter) and the kept ones'."""
    size = getattr(sample_jit, "_cache_size", None)
    return (size() if size else 0) + sum(
        fn._cache_size() for fn in _KEPT_SAMPLERS.values() if hasattr(fn, "_cache_size"))


def sample_with_key(params, sequence, key, config: ModelConfig, num_samples: int = 1, num_steps: int = NUM_SAMPLE_STEPS):
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    noise = draw_sample_noise(key, num_samples, len(sequence), num_steps, dtype)
    return sample_jit(params, jnp.asarray(sequence), noise, config)
