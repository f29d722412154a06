"""Opt-in bfloat16 training (`TrainConfig.precision`, `train.py --precision bf16`).

The parameters and the optimiser state stay float32. Inside the loss, a bfloat16 copy of the
parameters is what the model applies, so every matrix product and activation runs in bfloat16
(model/layers.py: a bfloat16 weight sets the product's dtype), while LayerNorm statistics and
softmaxes are computed in float32 (layers.LayerNorm, layers.softmax), the frames and their
composition with the predicted update stay float32 (model/denoiser.py), and the losses are
computed in float32 from float32 casts of the model's outputs. The gradient flows back through
the cast, so it arrives in float32 for the float32 parameters: the recipe of mixed-precision
training (Micikevicius et al. 2018; jmp's "params=float32, compute=bfloat16, output=float32"
policy), without loss scaling, which bfloat16's float32 exponent range makes unnecessary.
"""

import jax
import jax.numpy as jnp

# --precision value -> compute dtype (None: the parameters' own, float32: nothing is cast).
PRECISIONS = {"float32": None, "bf16": jnp.bfloat16}


def compute_dtype_of(precision: str):
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def cast_floating(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype` (integer leaves untouched)."""
    if dtype is None:
        return tree
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
