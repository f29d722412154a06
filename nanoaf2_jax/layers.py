"""Basic layers with the reference's (PyTorch) numerics and initialisation.

Attribute names of every module in this package mirror the reference's state_dict, so a torch
name such as `diffusion_module.blocks.1.ffn.0.weight` maps mechanically onto the Flax path
`diffusion_module/blocks_1/ffn_0/kernel` (see convert.py).
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

# torch.nn.init.xavier_uniform_ on the [out, in] weight; symmetric in fan-in/fan-out.
xavier_uniform = nn.initializers.xavier_uniform()

# Added to attention logits of masked keys. Finite so a fully masked row stays NaN-free.
MASK_BIAS = -1e9


def Linear(features: int, use_bias: bool = True, zero_init: bool = False) -> nn.Dense:
    kernel_init = nn.initializers.zeros if zero_init else xavier_uniform
    return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init, bias_init=nn.initializers.zeros)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm: eps 1e-5, biased variance computed from centred values."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + self.eps) * scale + bias


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
