"""With attention_mask=True, padding cannot change what the model computes for real residues.

One protein is padded to L, L+5 and L+40 (as length buckets do); trunk outputs, the denoiser's
prediction, the losses and the gradients of the real residues must agree (exactly, up to
rounding: checked tightly in float64, and in float32 as users run it). Without the mask
(the reference) they must not, or the test would pass for the wrong reason.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import get_preset
from nanoaf2_jax.data.batching import pad_protein
from nanoaf2_jax.model.convert import template_params
from nanoaf2_jax.diffusion.se3 import se3_forward_marginal
from nanoaf2_jax.model.alphafold2 import AlphaFold2
from nanoaf2_jax.geometry.rigid import frames_from_backbone
from nanoaf2_jax.training.train_step import draw_train_noise, loss_fn, nn_apply
from helpers import helix

L = 21
PADDINGS = (0, 5, 40)
CONFIG = get_preset("tiny").model


@pytest.fixture(scope="module")
def params():
    # Random values everywhere rather than the initialisation, which zeroes several output
    # projections (the denoiser would then return its input whatever the mask). Drawn with
    # numpy: no compilation needed.
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda x: (0.3 * rng.standard_normal(x.shape)).astype(x.dtype), template_params(CONFIG))


@functools.partial(jax.jit, static_argnames=("attention_mask", "with_grads"))
def outputs(params, batch, noise, attention_mask, with_grads):
    """Trunk single/pair, the denoised frames, the losses and (optionally) their gradients."""
    mask = batch["mask"] if attention_mask else None

    def run(m):
        seq = batch["sequence"]
        single, pair = m.trunk(seq, jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape), mask)
        true = frames_from_backbone(batch["coords_N"], batch["coords_CA"], batch["coords_C"])
        pred = m.diffusion_module(se3_forward_marginal(true, noise.t, noise.frames), noise.t,
                                  single, pair, mask)
        return single, pair, pred

    single, pair, pred = nn_apply(AlphaFold2(CONFIG), params, run)
    if with_grads:
        grads, losses = jax.grad(loss_fn, has_aux=True)(params, batch, noise, CONFIG, attention_mask)
    else:
        grads, (_, losses) = None, loss_fn(params, batch, noise, CONFIG, attention_mask)
    return {"single": single, "pair": pair, "rots": pred.rots, "trans": pred.trans,
            "losses": losses, "grads": grads}


def run_padded(params, pad, attention_mask, with_grads=True, dtype=np.float32):
    protein = helix(L)
    batch = {k: v[None].astype(dtype) if np.issubdtype(v.dtype, np.floating) else v[None]
             for k, v in pad_protein(protein, L + pad).items()}
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), params)
    # One draw for the longest padding, cut to each length: real residues see the same noise.
    full = draw_train_noise(jax.random.PRNGKey(2), 1, L + max(PADDINGS), dtype)
    noise = full._replace(frames=jax.tree_util.tree_map(lambda x: x[:, :L + pad], full.frames))
    out = jax.device_get(outputs(params, batch, noise, attention_mask, with_grads))
    # Real residues only.
    out["single"] = out["single"][:, :L]
    out["pair"] = out["pair"][:, :L, :L]
    out["rots"], out["trans"] = out["rots"][:, :L], out["trans"][:, :L]
    return out


def assert_close(a, b, tol, what=""):
    """Each leaf equal up to tol × (1 + its largest magnitude): float32 sums over a padded axis
    are reordered, so an absolute error relative to the leaf's scale is what padding may cost."""
    b = dict(jax.tree_util.tree_leaves_with_path(b))
    for path, x in jax.tree_util.tree_leaves_with_path(a):
        y = b[path]
        err = np.max(np.abs(x - y)) / (1 + np.max(np.abs(y)))
        assert err < tol, f"{what}{jax.tree_util.keystr(path)}: scaled error {err:.2e} >= {tol}"


@pytest.fixture(scope="module")
def masked(params):
    return {pad: run_padded(params, pad, attention_mask=True, with_grads=False) for pad in PADDINGS}


@pytest.fixture(scope="module")
def masked_float64(params):
    with jax.enable_x64(True):
        return {pad: run_padded(params, pad, attention_mask=True, dtype=np.float64) for pad in PADDINGS}


def test_padding_does_not_change_masked_outputs(masked):
    # float32, as users run it: padding reorders sums (1e-7 relative), and the random weights
    # amplify that (the denoiser's rotation angles reach tens of radians), so agreement is to
    # about 1e-5 here; a leak through the mask moves these outputs by more than 1e-3 (last test).
    # The exact invariance is checked in float64 below.
    unpadded = masked[0]
    for pad in PADDINGS[1:]:
        for name in ("single", "pair", "rots", "trans", "losses"):
            assert_close(masked[pad][name], unpadded[name], 1e-4, name)


def test_padding_does_not_change_masked_gradients_float64(masked_float64):
    # Gradients of weights shared by every residue pair (a LayerNorm bias, say) are sums of
    # L² terms that cancel to a small result; in float32 the reordering that a longer padded
    # axis brings (matrix-product blocking) is then of the order of the result's own rounding.
    # In float64 rounding is ~1e-16 while padding that leaks through (no mask, as in the test
    # below) moves them by more than 1e-3, so the invariance is checked there, tightly.
    unpadded = masked_float64[0]
    assert jax.tree_util.tree_leaves(unpadded["grads"])[0].dtype == np.float64
    for pad in PADDINGS[1:]:
        for name in ("single", "pair", "rots", "trans", "losses", "grads"):
            assert_close(masked_float64[pad][name], unpadded[name], 1e-10, name)


def test_padding_changes_outputs_without_the_mask(params, masked):
    # Unpadded, the mask is all True and changes nothing: masked[0] is the reference's output.
    unpadded = masked[0]
    padded = run_padded(params, PADDINGS[-1], attention_mask=False, with_grads=False)
    for name in ("single", "pair", "trans"):
        assert np.max(np.abs(padded[name] - unpadded[name])) > 1e-3, name
    assert abs(padded["losses"]["loss"] - unpadded["losses"]["loss"]) > 1e-4


def test_padding_changes_gradients_without_the_mask(params, masked_float64):
    with jax.enable_x64(True):
        padded = run_padded(params, PADDINGS[-1], attention_mask=False, dtype=np.float64)
    unpadded = masked_float64[0]["grads"]
    worst = max(np.max(np.abs(x - y)) / (1 + np.max(np.abs(y))) for x, y in
                zip(jax.tree_util.tree_leaves(padded["grads"]), jax.tree_util.tree_leaves(unpadded)))
    assert worst > 1e-3
