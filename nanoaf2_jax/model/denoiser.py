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
import numpy as np

from .layers import (GELU, LayerNorm, Linear, ReLU, fused_linear, key_mask_bias, run_sequential, softmax,
                     split_heads)
from ..geometry.rigid import (Rigid, axis_angle_to_rotation, ca_trace_rotations, compose,
                              local_neighbour_vectors, quaternion_update_to_rotation, rotate)


# AlphaFold 2's recycling distogram (suppl. 1.10): 15 edges, 16 bins of the CA-CA distance (Å).
SELF_CONDITION_BIN_EDGES = np.linspace(3.25, 20.75, 15)


class Conditioning(NamedTuple):
    """Step-invariant denoiser inputs derived from the trunk."""

    single: jnp.ndarray  # [B, L, c_atom]  single_cond_proj(single)
    attn_bias: tuple  # per block [B, H, L, L]: pair-bias logits (+ key mask)
    mask: object = None  # [B, L] real residues, or None (all real): for the CA-trace frames


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
    # What the translation update is expressed in: "local" (the reference: the noisy frame, so
    # at high t the network must undo a random rotation) or "global" (the diffusion space).
    translation_update: str = "local"
    # What the rotation update composes onto: "noisy" (the reference: the noisy input frame) or
    # "ca_trace" (the frame of the predicted CA(i-1), CA(i), CA(i+1): geometry/rigid.py).
    rotation_base: str = "noisy"
    # Where the rotation update is read from: "output_proj" (the reference: the first three
    # outputs of the shared output layer) or "local_geometry" (a small MLP of the detached final
    # features and the CA neighbours in the base frame; the rotation loss then cannot pull the
    # shared features away from the translations).
    rotation_head: str = "output_proj"
    # ModelConfig.self_conditioning, and Å per unit of the diffusion space (1 / coord_scale),
    # in which the previous estimate's CA-CA distances are binned.
    self_conditioning: bool = False
    angstrom_per_unit: float = 1.0

    def setup(self):
        self.frame_proj = Linear(self.c_atom)
        self.single_cond_proj = Linear(self.c_atom)
        self.time_embed = FourierTimeEmbedding(self.c_atom)
        self.time_mlp = (Linear(self.c_atom * 4), GELU(), Linear(self.c_atom))
        self.blocks = [DiffusionTransformerBlock(self.c_atom, self.c_z, self.n_heads) for _ in range(self.n_blocks)]
        # Zero-initialised so an untrained denoiser returns its input frames.
        self.output_proj = Linear(6, zero_init=True)
        if self.rotation_head == "local_geometry":
            self.rotation_mlp = (Linear(self.c_atom // 2), ReLU(), Linear(self.c_atom // 2), ReLU(),
                                 Linear(3, zero_init=True))
            self.rotation_norm = LayerNorm()
        if self.self_conditioning:
            # One bias per block and head from the distance bin; no bias term, so "no previous
            # estimate" (all-zero features) adds exactly nothing.
            self.self_condition_bias = Linear(self.n_blocks * self.n_heads, use_bias=False, zero_init=True)

    def condition(self, single, pair, mask=None) -> Conditioning:
        return Conditioning(
            self.single_cond_proj(single),
            tuple(block.attention_bias(pair, mask) for block in self.blocks),
            mask,
        )

    def self_condition_biases(self, previous, present) -> tuple:
        """Per block [B, H, L, L]: the attention bias of the previous clean estimate's CA
        positions `previous` [B, L, 3] (diffusion space), zero for the rows where `present` [B]
        is 0."""
        prev = jax.lax.stop_gradient(previous)
        diff = prev[:, :, None, :] - prev[:, None, :, :]
        dist = jnp.sqrt(jnp.sum(diff * diff, axis=-1)) * self.angstrom_per_unit
        bins = jnp.sum(dist[..., None] > jnp.asarray(SELF_CONDITION_BIN_EDGES, dist.dtype), axis=-1)
        features = jax.nn.one_hot(bins, len(SELF_CONDITION_BIN_EDGES) + 1, dtype=prev.dtype)
        features = features * jnp.asarray(present, prev.dtype)[:, None, None, None]
        bias = self.self_condition_bias(features)  # [B, L, L, blocks · heads]
        bias = bias.reshape(*bias.shape[:3], self.n_blocks, self.n_heads)
        return tuple(jnp.transpose(bias[..., i, :], (0, 3, 1, 2)) for i in range(self.n_blocks))

    def denoise(self, noisy: Rigid, t, cond: Conditioning, previous=None, present=None) -> Rigid:
        """t: [B]. Predicts a correction (rotation, translation) composed onto a base frame.
        previous [B, L, 3], present [B]: the self-conditioning input (self_conditioning only;
        None: no previous estimate)."""
        rots_flat = noisy.rots.reshape(*noisy.rots.shape[:-2], 9)
        h = self.frame_proj(jnp.concatenate([rots_flat, noisy.trans], axis=-1)) + cond.single
        time_cond = run_sequential(self.time_mlp, self.time_embed(t))
        attn_bias = cond.attn_bias
        if self.self_conditioning and previous is not None:
            attn_bias = tuple(a + b.astype(a.dtype)
                              for a, b in zip(attn_bias, self.self_condition_biases(previous, present)))
        for block, bias in zip(self.blocks, attn_bias):
            h = block.attend(h, bias, time_cond)
        # In the frames' dtype: under mixed precision h is bfloat16, while the frames (and their
        # composition with the update) stay float32.
        correction = self.output_proj(h).astype(noisy.trans.dtype)
        to_rotation = (quaternion_update_to_rotation if self.rotation_update == "quaternion"
                       else axis_angle_to_rotation)
        if (self.translation_update, self.rotation_base, self.rotation_head) == ("local", "noisy", "output_proj"):
            # the reference's expression
            return compose(noisy, Rigid(to_rotation(correction[..., :3]), correction[..., 3:]))
        if self.translation_update == "global":
            trans = noisy.trans + correction[..., 3:]
        else:
            trans = noisy.trans + rotate(noisy.rots, correction[..., 3:])
        if self.rotation_base == "ca_trace":
            # Detached: the rotation loss and FAPE train the correction, and must not move CA
            # atoms to bend the base frames towards the true rotations.
            base = ca_trace_rotations(jax.lax.stop_gradient(trans), cond.mask)
        else:
            base = noisy.rots
        if self.rotation_head == "local_geometry":
            vectors, flags = local_neighbour_vectors(jax.lax.stop_gradient(trans), base, cond.mask)
            features = jnp.concatenate([self.rotation_norm(jax.lax.stop_gradient(h)), vectors, flags], axis=-1)
            rot_vec = run_sequential(self.rotation_mlp, features).astype(noisy.trans.dtype)
        else:
            rot_vec = correction[..., :3]
        return Rigid(base @ to_rotation(rot_vec), trans)

    def __call__(self, noisy: Rigid, t, single, pair, mask=None) -> Rigid:
        cond = self.condition(single, pair, mask)
        if self.self_conditioning and self.is_initializing():  # create the bias layer
            return self.denoise(noisy, t, cond, noisy.trans, jnp.zeros(noisy.trans.shape[:1], noisy.trans.dtype))
        return self.denoise(noisy, t, cond)
