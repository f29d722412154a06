"""The optimiser is torch.optim.AdamW's arithmetic (bias corrections in full precision) and the
reference's clipping and schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nanoaf2_jax.training.adamw import adamw_torch
from nanoaf2_jax.training.train_step import OptimConfig, lr_schedule, make_optimizer


def torch_adamw_float64(p, grads, lrs, b1=0.9, b2=0.999, eps=1e-8, wd=0.01):
    """torch.optim.AdamW's single-tensor update, in float64 numpy (the truth for float32 runs)."""
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.astype(np.float64)
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * m / denom
    return p


def run(tx, p, grads):
    state = tx.init(p)
    for g in grads:
        u, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, u)
    return np.asarray(p, np.float64)


def test_float32_updates_match_torch_adamw_to_rounding():
    """optax.adamw computes 1 - 0.999**t in float32 (1.96e-5 relative error at t = 2), which
    shrinks every early update by ~1e-5; ours must be within float32 rounding of the truth."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(4096).astype(np.float32)
    grads = [rng.standard_normal(4096).astype(np.float32) * s for s in (1.0, 1e-3, 10.0)]
    lr = 1e-3
    truth = torch_adamw_float64(p0, grads, [lr] * 3)
    step = truth - p0  # what the three updates moved, in float64
    ours = run(adamw_torch(lr), jnp.asarray(p0), grads)
    optax_ = run(optax.adamw(lr, weight_decay=0.01), jnp.asarray(p0), grads)
    err = lambda x: np.max(np.abs((x - p0) - step)) / np.max(np.abs(step))
    # Each of the 3 updates rounds p once: an ulp of |p| ≤ 4 is 4.8e-7, against a largest step
    # of ~3e-3, so up to ~5e-4 of the step in the worst element.
    assert err(ours) < 5e-4
    # The same measure on the bias-correction error alone, which rounding does not hide: the
    # mean signed error of the step. Ours is unbiased; optax's is ~-1e-5 relative.
    bias = lambda x: np.mean(((x - p0) - step) * np.sign(step)) / np.mean(np.abs(step))
    assert abs(bias(ours)) < 2e-6, bias(ours)
    assert bias(optax_) < -5e-6, bias(optax_)  # the check can tell the two apart


def test_first_step_has_learning_rate_zero_and_schedule_reaches_zero():
    cfg = OptimConfig(learning_rate=3e-3, warmup_steps=10, total_steps=30)
    sched = lr_schedule(cfg)
    assert float(sched(0)) == 0.0
    assert float(sched(10)) == pytest.approx(3e-3)
    assert float(sched(30)) == pytest.approx(0.0, abs=1e-12)
    p = {"w": jnp.ones(3)}
    tx = make_optimizer(cfg)
    u, _ = tx.update({"w": jnp.full(3, 5.0)}, tx.init(p), p)
    assert np.all(np.asarray(u["w"]) == 0.0)  # lr 0: no step, not even weight decay


def test_clipping_scales_to_the_reference_norm():
    cfg = OptimConfig(learning_rate=1.0, warmup_steps=0, total_steps=10, weight_decay=0.0, grad_clip=1.0)
    clip = make_optimizer(cfg).init  # noqa: F841 (the chain builds)
    from nanoaf2_jax.training.train_step import clip_by_global_norm_torch

    g = {"a": jnp.full(4, 3.0), "b": jnp.full(1, 4.0)}  # global norm sqrt(36 + 16)
    out, _ = clip_by_global_norm_torch(1.0).update(g, optax.EmptyState())
    norm = math.sqrt(52)
    np.testing.assert_allclose(np.asarray(out["a"]), 3.0 / (norm + 1e-6), rtol=1e-6)
