"""AdamW as torch.optim.AdamW computes it, as an optax GradientTransformation.

Why not `optax.adamw`: optax computes the bias corrections 1 - β^t in the parameters' dtype,
and in float32 `1 - 0.999f**2` is 0.00199897 instead of 0.001999 (1.96e-5 relative; the error
is that of 0.999 itself, ~1.3e-8, divided by 1 - β2^t). Every Adam update of the first steps
is then ~1e-5 too small, the same way for every parameter, and on a loss as large as an untrained
model's (~7e4, gradient · update ~2e5) that moved the loss after two steps by 2.0 where the
reference's own float32 error is 0.02 (a recorded full-size fixture, docs/parity.md). torch
computes its bias corrections in Python float64. Here they are -expm1(t · log β), accurate to an
ulp in any dtype, and the update follows torch's order of operations:

    p ← p · (1 - lr · wd)
    m ← β1 m + (1 - β1) g;   v ← β2 v + (1 - β2) g²
    p ← p - (lr / (1 - β1^t)) · m / (√v / √(1 - β2^t) + eps)

`lr` comes from a schedule of the step count before this update (torch's LambdaLR: the first
step uses schedule(0)).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import math
import optax


class AdamWState(NamedTuple):
    count: jnp.ndarray  # int32 scalar: updates done so far
    mu: optax.Updates
    nu: optax.Updates


def _bias_correction(log_decay: float, step, dtype):
    """1 - β^step evaluated as -expm1(step · log β), which keeps full relative precision."""
    return -jnp.expm1(step.astype(dtype) * jnp.asarray(log_decay, dtype))


def adamw_torch(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01) -> optax.GradientTransformation:
    """torch.optim.AdamW (non-amsgrad, non-fused) with a schedule `learning_rate(step)`."""
    schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params):
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
        return AdamWState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update(grads, state, params):
        if params is None:
            raise ValueError("adamw_torch needs the parameters (weight decay is applied to them)")
        step = state.count + 1
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g), state.nu, grads)

        # The step's scalars once per dtype, not once per tensor: the same operations, but
        # traced ~200 times fewer (tracing the optimiser was a quarter of the train step's).
        scalars = {}

        def step_scalars(dtype):
            if dtype not in scalars:
                lr = jnp.asarray(schedule(state.count), dtype)
                scalars[dtype] = (lr, lr / _bias_correction(log_b1, step, dtype),
                                  jnp.sqrt(_bias_correction(log_b2, step, dtype)))
            return scalars[dtype]

        def new_update(p, m, v):
            lr, step_size, bc2_sqrt = step_scalars(p.dtype)
            decayed = p * (1 - lr * weight_decay)
            new_p = decayed - step_size * (m / (jnp.sqrt(v) / bc2_sqrt + eps))
            # optax applies p + u; the difference of two nearby floats is exact (Sterbenz), so
            # p + u reproduces new_p.
            return new_p - p

        updates = jax.tree_util.tree_map(new_update, params, mu, nu)
        return updates, AdamWState(step, mu, nu)

    return optax.GradientTransformation(init, update)
