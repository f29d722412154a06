"""Basic layers with the reference's (PyTorch) numerics and initialisation.

Attribute names of every module in this package mirror the reference's state_dict, so a torch
name such as `diffusion_module.blocks.1.ffn.0.weight` maps mechanically onto the Flax path
`diffusion_module/blocks_1/ffn_0/kernel` (see convert.py).
"""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

# torch.nn.init.xavier_uniform_ on the [out, in] weight; symmetric in fan-in/fan-out.
xavier_uniform = nn.initializers.xavier_uniform()

# Added to attention logits of masked keys. Finite so a fully masked row stays NaN-free.
MASK_BIAS = -1e9


# ---------------------------------------------------------------------------------------------
# Sums as matrix products
#
# The gradient of a broadcast (a bias added to every row) is a sum over the leading axes, and a
# LayerNorm needs row sums. XLA:CPU (its YNNPACK reductions) runs sums over non-minor axes one to
# two orders of magnitude slower, and fused row sums several times slower, than the same sums
# written as products with a vector of ones, which is what the helpers and custom VJPs below
# do. They compute the same sums, possibly in another order (float rounding only).
# ---------------------------------------------------------------------------------------------


def _dtype_token(x):
    """An empty array carrying x's dtype into a backward pass (without keeping x alive)."""
    return jnp.zeros((0,), x.dtype)


def _sum_rows(g):
    """g [..., c] summed over every leading axis, as ones[N] · g[N, c]."""
    flat = g.reshape(-1, g.shape[-1])
    return jnp.dot(jnp.ones((flat.shape[0],), g.dtype), flat)


@jax.custom_vjp
def add_bias(y, bias):
    """y [..., c] + bias [c]."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, (_dtype_token(y), bias)


def _add_bias_bwd(res, g):
    y_token, bias = res
    return g.astype(y_token.dtype), _sum_rows(g).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Linear(nn.Module):
    """torch.nn.Linear: y = x · kernel + bias, kernel [in, out] (the transposed torch weight).

    Computes what flax.linen.Dense computes (same parameters, names and initialisation order),
    with the input's leading axes merged into one before the matrix product: the product and its
    gradients are then plain 2-D matrix products, which XLA:CPU runs far faster than dots with
    several batch or contracting axes (the weight gradient of a [B, L, L, c] input contracts
    three axes). `fused_linear` runs several Linears that read the same input as one product.
    """

    features: int
    use_bias: bool = True
    zero_init: bool = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def weights(self, in_features: int):
        """(kernel [in, out], bias [out] or None), created on first use."""
        kernel_init = nn.initializers.zeros if self.zero_init else xavier_uniform
        kernel = self.param("kernel", kernel_init, (in_features, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        return kernel, bias

    def __call__(self, x):
        kernel, bias = self.weights(x.shape[-1])
        return _add_bias(matmul_last(x, kernel), bias)


def compute_dtype(x, kernel):
    """The dtype a product of x and a weight runs in: the promoted one (float32, or float64 under
    x64: the parity runs), except that a bfloat16 weight makes it bfloat16 whatever the input.
    Mixed precision (training/mixed_precision.py) casts the float32 parameters to bfloat16, and
    float32 inputs (noisy frames, time embeddings) must not promote the product back."""
    if kernel.dtype == jnp.bfloat16:
        return kernel.dtype
    return jnp.result_type(x, kernel)


def matmul_last(x, kernel):
    """x [..., in] · kernel [in, out] as one 2-D matrix product, in compute_dtype."""
    dtype = compute_dtype(x, kernel)
    out = jnp.dot(x.reshape(-1, x.shape[-1]).astype(dtype), kernel.astype(dtype))
    return out.reshape(*x.shape[:-1], kernel.shape[-1])


def _add_bias(y, bias):
    return y if bias is None else add_bias(y, bias.astype(y.dtype))


def fused_linear(x, layers):
    """[layer(x) for layer in layers] with one matrix product: the kernels are concatenated
    along their output axis, so every output element is the same sum of the same products."""
    weights = [layer.weights(x.shape[-1]) for layer in layers]
    y = matmul_last(x, jnp.concatenate([k for k, _ in weights], axis=-1))
    splits, total = [], 0
    for k, _ in weights[:-1]:
        total += k.shape[-1]
        splits.append(total)
    return [_add_bias(part, b) for part, (_, b) in zip(jnp.split(y, splits, axis=-1), weights)]


def _mean_last(x):
    """jnp.mean(x, -1, keepdims=True) with the sum as a product with ones (a fast matrix-vector
    product on XLA:CPU, where a fused reduction is not)."""
    c = x.shape[-1]
    total = jnp.dot(x.reshape(-1, c), jnp.ones((c,), x.dtype))
    return (total / c).reshape(*x.shape[:-1], 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, shift, eps):
    """(x - mean) / sqrt(var + eps) · scale + shift over the last axis (torch.nn.LayerNorm).

    Row means are products with a vector of ones, and the backward pass is the closed form
    dx = r · (ĝ - mean(ĝ) - n · mean(ĝ · n)) with ĝ = g · scale, n the normalised input and
    r = 1 / sqrt(var + eps): the same gradient as differentiating the forward pass, with
    fewer, faster passes over the data on XLA:CPU.
    """
    return _layer_norm_fwd(x, scale, shift, eps)[0]


def _layer_norm_fwd(x, scale, shift, eps):
    centred = x - _mean_last(x)
    r = jax.lax.rsqrt(_mean_last(centred * centred) + eps)
    normed = centred * r
    return normed * scale + shift, (normed, r, scale, _dtype_token(shift))


def _layer_norm_bwd(eps, res, g):
    normed, r, scale, shift_token = res
    g_scaled = g * scale
    dx = r * (g_scaled - _mean_last(g_scaled) - normed * _mean_last(g_scaled * normed))
    return dx.astype(normed.dtype), _sum_rows(g * normed).astype(scale.dtype), _sum_rows(g).astype(shift_token.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm: eps 1e-5, biased variance computed from centred values.

    A bfloat16 input (mixed precision) is normalised in float32, its mean and variance included,
    and the result returned in bfloat16: bfloat16's 8-bit mantissa cannot hold a variance."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        if x.dtype == jnp.bfloat16:
            f32 = jnp.float32
            return layer_norm(x.astype(f32), scale.astype(f32), bias.astype(f32), self.eps).astype(x.dtype)
        return layer_norm(x, scale, bias, self.eps)


def softmax(logits, axis=-1):
    """jax.nn.softmax, computed in float32 for bfloat16 logits (mixed precision: exp and the
    normalising sum need float32's mantissa) and returned in the logits' dtype."""
    if logits.dtype == jnp.bfloat16:
        return jax.nn.softmax(logits.astype(jnp.float32), axis=axis).astype(logits.dtype)
    return jax.nn.softmax(logits, axis=axis)


class GELU(nn.Module):
    """Exact (erf) GELU, torch's default."""

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=False)


class ReLU(nn.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


def run_sequential(layers, x):
    """Apply a tuple of modules in order: our stand-in for torch.nn.Sequential, which keeps the
    torch indices (ffn.0, ffn.2) as Flax names (ffn_0, ffn_2)."""
    for layer in layers:
        x = layer(x)
    return x


def key_mask_bias(mask, dtype):
    """[..., K] bool mask -> additive logits bias (0 for real keys, MASK_BIAS for padding)."""
    return jnp.where(mask, 0.0, MASK_BIAS).astype(dtype)


def split_heads(x, n_heads):
    return x.reshape(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)
