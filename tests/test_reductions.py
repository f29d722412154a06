"""Pairwise sums: accurate in float32 whatever order the backend would reduce in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.model.reductions import pairwise_mean, pairwise_sum


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 24, 24), (2, 200, 200)])
def test_pairwise_sum_is_accurate_and_the_same_eager_and_jitted(shape):
    # Many terms of similar size (like per-pair FAPE errors): the case where a sequential
    # float32 sum drifts most, since each partial sum rounds the same way.
    x = (3.52 + 0.01 * np.random.default_rng(0).random(shape)).astype(np.float32)
    truth = np.sum(x.astype(np.float64))
    eager, jitted = pairwise_sum(jnp.asarray(x)), jax.jit(pairwise_sum)(jnp.asarray(x))
    assert float(eager) == float(jitted)
    # Tree summation: the error grows like log2(n) ulps (17 levels at n = 80,000): 3e-7 relative.
    assert abs(float(eager) - truth) <= 3e-7 * truth
    # A sequential float32 sum (what XLA:CPU does on some CPUs) is far worse at this size,
    # so the bound above is one a naive reduction can fail.
    if x.size >= 1728:
        sequential = np.cumsum(x.ravel(), dtype=np.float32)[-1]
        assert abs(float(sequential) - truth) > 3e-7 * truth
    assert float(pairwise_mean(jnp.asarray(x))) == pytest.approx(truth / x.size, rel=3e-7)


def test_pairwise_sum_gradient_is_ones_and_empty_sum_is_zero():
    x = jnp.arange(5.0)
    np.testing.assert_array_equal(np.asarray(jax.grad(pairwise_sum)(x)), np.ones(5))
    assert float(pairwise_sum(jnp.zeros((0,)))) == 0.0
