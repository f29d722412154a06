"""Sums whose float32 accuracy does not depend on the CPU the program runs on.

Why: a reduction's summation order is the backend's choice. XLA:CPU reduces float32 with
vector partial sums on some CPUs and sequentially on others, so a loss that averages B·L·L
pair errors (1,728 for a 3 × 24 batch, 80,000 for 2 × 200) can lose ~1e-5 relative on one
machine and ~1e-7 on another: the mean FAPE of a recorded fixture came out 1.2e-5 low, 1.19× its
parity allowance, while each of its terms was right to 1e-7. Pairwise (tree) summation adds
halves elementwise, log2(n) times, so no reduction order is left to the backend and the error
is O(log n · ε) everywhere, eager or jitted. The arrays summed this way are the losses' few
thousand elements; the extra elementwise adds cost nothing next to the model.
"""

import jax.numpy as jnp


def pairwise_sum(x: jnp.ndarray) -> jnp.ndarray:
    """Sum of all elements by a balanced binary tree of elementwise adds (zero-padded to 2^k)."""
    flat = jnp.ravel(x)
    n = flat.shape[0]
    if n == 0:
        return jnp.zeros((), x.dtype)
    size = 1 << (n - 1).bit_length()
    flat = jnp.pad(flat, (0, size - n))
    while size > 1:
        size //= 2
        flat = flat[:size] + flat[size:]
    return flat[0]


def pairwise_mean(x: jnp.ndarray) -> jnp.ndarray:
    return pairwise_sum(x) / x.size
