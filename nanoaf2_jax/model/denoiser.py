"""The SE(3) denoiser: noisy frames + time + trunk representations -> predicted clean frames.

The work that depends only on the trunk outputs (single conditioning, each block's pair-bias
logits) is split out into `condition`, so reverse diffusion computes it once instead of once per
step. `__call__` composes the two and is what the reference's DiffusionModule.forward computes.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn

from .layers import GELU, LayerNorm, Linear, fused_linear, key_mask_bias, run_sequential, softmax, split_heads
from ..geometry.rigid import Rigid, axis_angle_to_rotation, compose, quaternion_update_to_rotation


class Conditioning(NamedTuple):
    """Step-invariant denoiser inputs derived from the trunk."""

    single: jnp.ndarray  # [B, L, c_atom]  single_cond_proj(single)
    attn_bias: tuple  # per block [B, H, L, L]: pair-bias logits (+ key mask)


class FourierTimeEmbedding(nn.Module):
    dim: int

    def __call__(self, t):
        half = self.dim // 2
        freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=t.dtype) / half)
        args = t[..., None] * freqs
        return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class AdaLN(nn.Module):
    """LayerNorm(x) · (1 + scale) + shift, with (scale, shift) projected from the time embedding."""

    dim: int

    def setup(self):
        self.ln = LayerNorm()
        self.proj = Linear(2 * self.dim, zero_init=True)

    def __call__(self, x, cond):
        scale_shift = self.proj(cond)
        scale_shift = scale_shift.reshape(*scale_shift.shape[:-1], *(1,) * (x.ndim - cond.ndim), -1)
        scale, shift = jnp.split(scale_shift, 2, axis=-1)
        return self.ln(x) * (1 + scale) + shift


class DiffusionTransformerBlock(nn.Module):
    c_atom: int
    c_z: int
    n_heads: int

    def setup(self):
        self.adaln1 = AdaLN(self.c_atom)
        self.to_q = Linear(self.c_atom, use_bias=False)
        self.to_k = Linear(self.c_atom, use_bias=False)
        self.to_v = Linear(self.c_atom, use_bias=False)
        self.pair_bias = Linear(self.n_heads, use_bias=False)
        self.to_out = Linear(self.c_atom)
        self.adaln2 = AdaLN(self.c_atom)
        self.ffn = (Linear(self.c_atom * 4), GELU(), Linear(self.c_atom))

    def attention_bias(self, pair, mask=None):
        bias = jnp.transpose(self.pair_bias(pair), (0, 3, 1, 2))
        if mask is not None:
            bias = bias + key_mask_bias(mask, bias.dtype)[:, None, None, :]
        return bias

    def attend(self, x, attn_bias, time_cond):
        h = self.adaln1(x, time_cond)
        q, k, v = (split_heads(x, self.n_heads) for x in fused_linear(h, (self.to_q, self.to_k, self.to_v)))
        logits = jnp.einsum("bihd,bjhd->bhij", q, k) / ((self.c_atom // self.n_heads) ** 0.5)
        attn = softmax(logits + attn_bias, axis=-1)
        out = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(x.shape)
        x = x + self.to_out(out)
        return x + run_sequential(self.ffn, self.adaln2(x, time_cond))

    def __call__(self, x, pair, time_cond, mask=None):
        return self.attend(x, self.attention_bias(pair, mask), time_cond)


class DiffusionModule(nn.Module):
    c_s: int
    c_z: int
    c_atom: int
    n_blocks: int
    n_heads: int
    # How output_proj's first three outputs become the rotation update: "rodrigues" (the
    # reference: an axis-angle vector, whose zero-initialised weights never move, the map having
    # zero derivative at 0) or "quaternion" (AlphaFold 2's (1, b, c, d)/‖·‖, which learns).
    rotation_update: str = "rodrigues"

    def setup(self):
        self.frame_proj = Linear(self.c_atom)
        self.single_cond_proj = Linear(self.c_atom)
        self.time_embed = FourierTimeEmbedding(self.c_atom)
        self.time_mlp = (Linear(self.c_atom * 4), GELU(), Linear(self.c_atom))
        self.blocks = [DiffusionTransformerBlock(self.c_atom, self.c_z, self.n_heads) for _ in range(self.n_blocks)]
        # Zero-initialised so an untrained denoiser returns its input frames.
        self.output_proj = Linear(6, zero_init=True)

    def condition(self, single, pair, mask=None) -> Conditioning:
        return Conditioning(
            self.single_cond_proj(single),
            tuple(block.attention_bias(pair, mask) for block in self.blocks),
        )

    def denoise(self, noisy: Rigid, t, cond: Conditioning) -> Rigid:
        """t: [B]. Predicts a correction (axis-angle, translation) composed onto the noisy frame."""
        rots_flat = noisy.rots.reshape(*noisy.rots.shape[:-2], 9)
        h = self.frame_proj(jnp.concatenate([rots_flat, noisy.trans], axis=-1)) + cond.single
        time_cond = run_sequential(self.time_mlp, self.time_embed(t))
        for block, bias in zip(self.blocks, cond.attn_bias):
            h = block.attend(h, bias, time_cond)
        # In the frames' dtype: under mixed precision h is bfloat16, while the frames (and their
        # composition with the update) stay float32.
        correction = self.output_proj(h).astype(noisy.trans.dtype)
        if self.rotation_update == "quaternion":
            rot = quaternion_update_to_rotation(correction[..., :3])
        else:
            rot = axis_angle_to_rotation(correction[..., :3])
        update = Rigid(rot, correction[..., 3:])
        return compose(noisy, update)

    def __call__(self, noisy: Rigid, t, single, pair, mask=None) -> Rigid:
        return self.denoise(noisy, t, self.condition(single, pair, mask))
