"""Self-conditioning (ModelConfig.self_conditioning, issue 20): the denoiser reads its previous
estimate of the structure. Off: no parameters, nothing changes; on: the sampler hands each
step's prediction to the next, and training conditions half of its noise samples."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import helix
from nanoaf2_jax.diffusion.reverse import reverse_diffusion
from nanoaf2_jax.diffusion.se3 import draw_frame_noise, se3_reverse_step
from nanoaf2_jax.geometry.rigid import Rigid
from nanoaf2_jax.inference.sampling import sample_with_key
from nanoaf2_jax.model.alphafold2 import init_params
from nanoaf2_jax.model.convert import layers_beyond_reference
from nanoaf2_jax.model.model_config import MODEL_PRESETS
from nanoaf2_jax.training.train_step import draw_train_noise_for, loss_fn

TINY = MODEL_PRESETS["tiny"]
SC = dataclasses.replace(TINY, self_conditioning=True)
SEQUENCE = jnp.arange(18) % 20


def _perturbed(params, scale=0.1, seed=7):
    """Every parameter moved off its initial value (the zero-initialised output layers too, so
    that the denoiser's prediction depends on its attention)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                               for x, k in zip(leaves, keys)])


def _without_bias_layer(params):
    dm = {k: v for k, v in params["diffusion_module"].items() if k != "self_condition_bias"}
    return {**params, "diffusion_module": dm}


def _with_kernel(params, kernel):
    dm = dict(params["diffusion_module"])
    dm["self_condition_bias"] = {"kernel": kernel}
    return {**params, "diffusion_module": dm}


def test_parameters_only_when_on():
    on = init_params(SC, jax.random.PRNGKey(0))
    kernel = on["diffusion_module"]["self_condition_bias"]["kernel"]
    # 16 distance bins -> one bias per denoiser block and head; zero at initialisation.
    assert kernel.shape == (16, TINY.num_denoise_blocks * TINY.denoise_heads)
    assert not np.any(np.asarray(kernel))
    assert "diffusion_module.self_condition_bias" in layers_beyond_reference(SC)
    assert "diffusion_module.self_condition_bias" not in layers_beyond_reference(TINY)


def test_zero_bias_samples_what_the_model_without_it_samples():
    """With the bias layer at zero the previous estimate adds nothing; a nonzero one
    changes the samples (so the input does reach the denoiser)."""
    params = _perturbed(init_params(SC, jax.random.PRNGKey(0)))
    kernel = params["diffusion_module"]["self_condition_bias"]["kernel"]
    key = jax.random.PRNGKey(1)
    off = sample_with_key(_without_bias_layer(params), SEQUENCE, key, TINY, num_samples=2, num_steps=8)
    zero = sample_with_key(_with_kernel(params, jnp.zeros_like(kernel)), SEQUENCE, key, SC, num_samples=2,
                           num_steps=8)
    on = sample_with_key(params, SEQUENCE, key, SC, num_samples=2, num_steps=8)
    # Equal up to float rounding: the two are different compiled programs (XLA may fuse and order
    # the shared operations differently), 1e-5 Å on coordinates of tens of Å.
    np.testing.assert_allclose(np.asarray(zero["coords_CA"]), np.asarray(off["coords_CA"]), rtol=1e-5, atol=1e-4)
    assert float(jnp.abs(on["coords_CA"] - off["coords_CA"]).max()) > 0.1


def test_reverse_diffusion_hands_each_prediction_to_the_next_step():
    """A stand-in denoiser whose prediction depends on what it is given: the scan must equal a
    plain loop that passes nothing at the first step and the previous prediction after."""
    n, L, steps = 2, 6, 5
    k = jax.random.split(jax.random.PRNGKey(3), 3)
    start = draw_frame_noise(k[0], (n, L))
    trans_steps = jax.random.normal(k[1], (steps - 1, n, L, 3))

    def denoise(frames, t, previous, present):
        return Rigid(frames.rots, 0.5 * frames.trans + present[:, None, None] * previous + t)

    out = reverse_diffusion(denoise, start.rot_omega, start.rot_axis, start.trans, trans_steps, "igso3", 2.0,
                            0.0, self_conditioning=True)
    # The loop, written out: the first frames are those reverse_diffusion starts from.
    first = reverse_diffusion(lambda f, t, p, q: f, start.rot_omega, start.rot_axis, start.trans,
                              trans_steps[:0], "igso3", 2.0, 0.0, self_conditioning=True)
    frames, previous, present = first, jnp.zeros((n, L, 3)), jnp.zeros((n,))
    timesteps = jnp.linspace(1.0, 0.0, steps + 1)
    for i in range(steps - 1):
        pred = denoise(frames, timesteps[i], previous, present)
        frames = se3_reverse_step(frames, pred, timesteps[i], timesteps[i + 1], trans_steps[i], 2.0, 0.0)
        previous, present = pred.trans, jnp.ones((n,))
    expected = denoise(frames, timesteps[-2], previous, present)
    np.testing.assert_allclose(np.asarray(out.trans), np.asarray(expected.trans), rtol=1e-5, atol=1e-5)
    # And the same stand-in without its previous estimate gives another structure.
    plain = reverse_diffusion(lambda f, t: denoise(f, t, jnp.zeros((n, L, 3)), jnp.zeros((n,))),
                              start.rot_omega, start.rot_axis, start.trans, trans_steps, "igso3", 2.0, 0.0)
    assert float(jnp.abs(plain.trans - out.trans).max()) > 1e-2


def _batch(length=16):
    p = helix(length, seed=0)
    batch = {k: jnp.asarray(getattr(p, k))[None] for k in ("coords_N", "coords_CA", "coords_C")}
    batch["sequence"] = jnp.asarray(p.sequence)[None]
    batch["mask"] = jnp.ones((1, length), bool)
    return batch


def test_training_conditions_the_samples_drawn_below_one_half():
    """No sample drawn below 0.5: the loss is the model's without the input (to float rounding
    between two compiled programs) and the bias layer gets no gradient; all of them: it does,
    and the loss moves."""
    params = _perturbed(init_params(SC, jax.random.PRNGKey(0)))
    batch = _batch()
    noise = draw_train_noise_for(SC, jax.random.PRNGKey(2), 1, 16)
    assert noise.self_condition.shape == noise.t.shape

    @jax.jit
    def loss_and_grad(p, u):  # one compilation for both draws
        def loss(q):
            return loss_fn(q, batch, noise._replace(self_condition=u), SC, attention_mask=True)[0]
        value, grad = jax.value_and_grad(loss)(p)
        return value, grad["diffusion_module"]["self_condition_bias"]["kernel"]

    never, always = jnp.ones_like(noise.t), jnp.zeros_like(noise.t)
    without = jax.jit(lambda p: loss_fn(p, batch, noise._replace(self_condition=None), TINY,
                                        attention_mask=True)[0])(_without_bias_layer(params))
    loss_never, grad_never = loss_and_grad(params, never)
    loss_always, grad_always = loss_and_grad(params, always)
    assert float(loss_never) == pytest.approx(float(without), rel=1e-6)
    assert not np.any(np.asarray(grad_never))
    assert float(jnp.abs(grad_always).max()) > 0
    assert float(loss_always) != pytest.approx(float(without), rel=1e-6)


def test_noise_draws_are_unchanged_when_off():
    """Turning the lever on adds a draw and changes none of the others (same t, same frames)."""
    off = draw_train_noise_for(TINY, jax.random.PRNGKey(4), 2, 8)
    on = draw_train_noise_for(SC, jax.random.PRNGKey(4), 2, 8)
    assert off.self_condition is None
    np.testing.assert_array_equal(np.asarray(off.t), np.asarray(on.t))
    np.testing.assert_array_equal(np.asarray(off.frames.trans), np.asarray(on.frames.trans))
