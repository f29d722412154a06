"""Reverse diffusion from t = 1 to a structure, for any denoiser: the sampler's loop
(inference/sampling.py) and the pLDDT head's training rollouts (training/train_step.py) are this
one function, so the structures the head is trained on are those sampling gives."""

import jax
import jax.numpy as jnp

from ..geometry.rigid import Rigid
from .se3 import igso3_from_normals, r3_alpha_bar, se3_reverse_step, uniform_rotation_from_normals


def reverse_diffusion(denoise, rot_omega, rot_axis, trans_init, trans_steps, rotation_noise: str,
                      sigma_max, eta=None, self_conditioning: bool = False) -> Rigid:
    """Frames in the diffusion space after len(trans_steps) + 1 reverse steps.

    denoise(frames, t) -> predicted clean frames; rot_omega [N, L], rot_axis and trans_init
    [N, L, 3]: the normals of the t = 1 frames; trans_steps [S - 1, N, L, 3]: one translation
    normal per step with t_next > 0. self_conditioning: denoise(frames, t, previous, present)
    is also given the previous step's predicted translations [N, L, 3] (present [N]: 0 at the
    first step, which has none, 1 after)."""
    dtype = trans_init.dtype
    num_steps = trans_steps.shape[0] + 1
    # Start at t = 1. The reference: identity frames pushed through its forward marginal at
    # σ_max; with exact IGSO3 noise, the uniform rotations IGSO3(σ) tends to (the same four
    # normals per residue). Translations: N(0, I) in the diffusion space (Å × coord_scale).
    if rotation_noise == "igso3":
        rots = uniform_rotation_from_normals(rot_omega, rot_axis)
    else:
        rots = igso3_from_normals(jnp.asarray(sigma_max, dtype), rot_omega, rot_axis)
    frames = Rigid(rots, jnp.sqrt(1 - r3_alpha_bar(jnp.ones((), dtype))) * trans_init)
    timesteps = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=dtype)
    previous = ()
    if self_conditioning:
        previous = (jnp.zeros_like(trans_init), jnp.zeros(trans_init.shape[:1], dtype))

    def step(carry, inputs):
        frames, previous = carry
        t_now, t_next, trans_normal = inputs
        pred = denoise(frames, t_now, *previous)
        if self_conditioning:
            previous = (pred.trans, jnp.ones_like(previous[1]))
        return (se3_reverse_step(frames, pred, t_now, t_next, trans_normal, sigma_max, eta), previous), None

    (frames, previous), _ = jax.lax.scan(step, (frames, previous),
                                         (timesteps[:-2], timesteps[1:-1], trans_steps))
    # Last step lands on t = 0: take the prediction itself.
    return denoise(frames, timesteps[-2], *previous)
