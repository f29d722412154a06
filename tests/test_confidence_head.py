"""The structure pLDDT head judges k structures per sequence row at once (diffusion multiplicity,
sampling): it must give each structure the logits it gets when judged alone with its row."""

import jax
import jax.numpy as jnp
import numpy as np

from nanoaf2_jax.model.confidence import StructureConfidenceHead


def test_k_structures_per_row_match_each_judged_alone():
    rng = np.random.default_rng(0)
    B, k, L = 2, 3, 12
    single = jnp.asarray(rng.normal(size=(B, L, 8)), jnp.float32)
    pair = jnp.asarray(rng.normal(size=(B, L, L, 8)), jnp.float32)
    ca = jnp.asarray(np.cumsum(rng.normal(size=(B * k, L, 3)) * 3.0, axis=1), jnp.float32)
    mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [7]]))
    head = StructureConfidenceHead(10, c_hidden=16)
    params = head.init(jax.random.PRNGKey(0), single, pair, ca, mask)
    # Non-zero biases, so the bias of the linear applied after the mean over partners counts.
    params = jax.tree_util.tree_map(lambda x: x + 0.3 * jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    apply = jax.jit(head.apply)
    together = apply(params, single, pair, ca, mask)
    assert together.shape == (B * k, L, 10)
    for row in range(B * k):
        b = row // k
        alone = apply(params, single[b:b + 1], pair[b:b + 1], ca[row:row + 1], mask[b:b + 1])
        real = np.asarray(mask[b])
        np.testing.assert_allclose(np.asarray(together[row])[real], np.asarray(alone[0])[real], rtol=1e-5, atol=1e-5)
    # The structure matters: another row's CA atoms give other logits.
    other = apply(params, single[:1], pair[:1], ca[1:2], mask[:1])
    assert np.abs(np.asarray(other[0]) - np.asarray(together[0])).max() > 1e-3
