"""Pairformer trunk: input embedding and blocks that update the single [B, L, c_s] and pair
[B, L, L, c_z] representations.

Every module takes an optional residue mask. With mask=None it computes exactly what the
reference computes (padding included in every sum and softmax); with a mask, padded residues
are excluded from triangular products and attention keys, so the outputs of real residues do
not depend on how much padding follows them.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from .layers import LayerNorm, Linear, ReLU, key_mask_bias, run_sequential, split_heads
from .residue_constants import NUM_ONE_HOT

RELPOS_CLIP = 32


def pair_mask_from(mask):
    return None if mask is None else mask[:, :, None] & mask[:, None, :]


class InputEmbedding(nn.Module):
    c_s: int
    c_z: int

    def setup(self):
        self.single_proj = Linear(self.c_s)
        self.left_single = Linear(self.c_z)
        self.right_single = Linear(self.c_z)
        self.relpos = nn.Embed(2 * RELPOS_CLIP + 1, self.c_z, embedding_init=nn.initializers.normal(1.0))

    def __call__(self, sequence, residue_index):
        dtype = self.relpos.embedding.dtype
        # Codes above 20 (the parser's unknown, 24) share the last one-hot slot, as in the reference.
        one_hot = jax.nn.one_hot(jnp.clip(sequence, 0, NUM_ONE_HOT - 1), NUM_ONE_HOT, dtype=dtype)
        single = self.single_proj(one_hot)
        pair = self.left_single(one_hot)[:, :, None, :] + self.right_single(one_hot)[:, None, :, :]
        offset = residue_index[:, :, None] - residue_index[:, None, :] + RELPOS_CLIP
        return single, pair + self.relpos(jnp.clip(offset, 0, 2 * RELPOS_CLIP))


class TriangularMultiplicativeUpdate(nn.Module):
    """Pair update from triangles: outgoing z_ij += Σ_k a_ik b_jk, incoming Σ_k a_ki b_kj."""

    c_z: int
    c_hidden: int
    mode: str = "outgoing"

    def setup(self):
        self.ln = LayerNorm()
        self.left_proj = Linear(self.c_hidden)
        self.right_proj = Linear(self.c_hidden)
        self.left_gate = Linear(self.c_hidden)
        self.right_gate = Linear(self.c_hidden)
        self.output_gate = Linear(self.c_z)
        self.output_proj = Linear(self.c_z)
        self.final_norm = LayerNorm()

    def __call__(self, pair, pair_mask=None):
        z = self.ln(pair)
        left = self.left_proj(z) * jax.nn.sigmoid(self.left_gate(z))
        right = self.right_proj(z) * jax.nn.sigmoid(self.right_gate(z))
        if pair_mask is not None:
            m = pair_mask[..., None].astype(left.dtype)
            left, right = left * m, right * m
        if self.mode == "outgoing":
            out = jnp.einsum("bikc,bjkc->bijc", left, right)
        else:
            out = jnp.einsum("bkic,bkjc->bijc", left, right)
        out = self.output_proj(self.final_norm(out))
        return pair + jax.nn.sigmoid(self.output_gate(pair)) * out


class TriangularAttention(nn.Module):
    """Row attention over the pair (starting node); 'ending' runs it on the transposed pair."""

    c_z: int
    n_heads: int = 4
    mode: str = "starting"

    def setup(self):
        self.ln = LayerNorm()
        self.to_q = Linear(self.c_z, use_bias=False)
        self.to_k = Linear(self.c_z, use_bias=False)
        self.to_v = Linear(self.c_z, use_bias=False)
        self.bias_proj = Linear(self.n_heads, use_bias=False)
        self.to_out = Linear(self.c_z)
        self.gate = Linear(self.c_z)

    def __call__(self, pair, pair_mask=None):
        if self.mode == "ending":
            pair = jnp.swapaxes(pair, 1, 2)
            pair_mask = None if pair_mask is None else jnp.swapaxes(pair_mask, 1, 2)
        z = self.ln(pair)
        q, k, v = (split_heads(f(z), self.n_heads) for f in (self.to_q, self.to_k, self.to_v))
        head_dim = self.c_z // self.n_heads
        logits = jnp.einsum("bijhd,bikhd->bhijk", q, k) / (head_dim**0.5)
        # Triangle bias b_jk from the pair itself, shared by every row i (the reference's
        # comment says it broadcasts over j; its code broadcasts over i, as AlphaFold2 does).
        logits = logits + jnp.transpose(self.bias_proj(z), (0, 3, 1, 2))[:, :, None, :, :]
        if pair_mask is not None:
            logits = logits + key_mask_bias(pair_mask, logits.dtype)[:, None, :, None, :]
        attn = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhijk,bikhd->bijhd", attn, v).reshape(pair.shape)
        result = pair + jax.nn.sigmoid(self.gate(pair)) * self.to_out(out)
        return jnp.swapaxes(result, 1, 2) if self.mode == "ending" else result


class Transition(nn.Module):
    dim: int
    expansion: int = 4

    def setup(self):
        self.ln = LayerNorm()
        self.linear1 = Linear(self.dim * self.expansion)
        self.linear2 = Linear(self.dim)

    def __call__(self, x):
        return x + self.linear2(jax.nn.relu(self.linear1(self.ln(x))))


class AttentionWithPairBias(nn.Module):
    """Gated self-attention on the single representation with a per-head bias from the pair."""

    c_s: int
    c_z: int
    n_heads: int

    def setup(self):
        self.ln_s = LayerNorm()
        self.ln_z = LayerNorm()
        self.to_q = Linear(self.c_s, use_bias=False)
        self.to_k = Linear(self.c_s, use_bias=False)
        self.to_v = Linear(self.c_s, use_bias=False)
        self.pair_bias = Linear(self.n_heads, use_bias=False)
        self.to_out = Linear(self.c_s)
        self.gate = Linear(self.c_s)

    def __call__(self, single, pair, mask=None):
        s = self.ln_s(single)
        z = self.ln_z(pair)
        q, k, v = (split_heads(f(s), self.n_heads) for f in (self.to_q, self.to_k, self.to_v))
        logits = jnp.einsum("bihd,bjhd->bhij", q, k) / ((self.c_s // self.n_heads) ** 0.5)
        logits = logits + jnp.transpose(self.pair_bias(z), (0, 3, 1, 2))
        if mask is not None:
            logits = logits + key_mask_bias(mask, logits.dtype)[:, None, None, :]
        attn = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(single.shape)
        return single + jax.nn.sigmoid(self.gate(s)) * self.to_out(out)


class PairformerBlock(nn.Module):
    """Pair stack (tri_out, tri_in, tri_attn_start, tri_attn_end, transition), then single
    stack (attention with pair bias, transition)."""

    c_s: int
    c_z: int
    n_heads: int

    def setup(self):
        self.tri_out = TriangularMultiplicativeUpdate(self.c_z, self.c_z, "outgoing")
        self.tri_in = TriangularMultiplicativeUpdate(self.c_z, self.c_z, "incoming")
        self.tri_attn_start = TriangularAttention(self.c_z, self.n_heads, "starting")
        self.tri_attn_end = TriangularAttention(self.c_z, self.n_heads, "ending")
        self.pair_transition = Transition(self.c_z)
        self.attn = AttentionWithPairBias(self.c_s, self.c_z, self.n_heads)
        self.single_transition = Transition(self.c_s)

    def __call__(self, single, pair, mask=None):
        pair_mask = pair_mask_from(mask)
        pair = self.tri_out(pair, pair_mask)
        pair = self.tri_in(pair, pair_mask)
        pair = self.tri_attn_start(pair, pair_mask)
        pair = self.tri_attn_end(pair, pair_mask)
        pair = self.pair_transition(pair)
        single = self.attn(single, pair, mask)
        single = self.single_transition(single)
        return single, pair


class PLDDTHead(nn.Module):
    c_s: int
    num_bins: int

    def setup(self):
        self.net = (LayerNorm(), Linear(self.c_s), ReLU(), Linear(self.num_bins))

    def __call__(self, single):
        return run_sequential(self.net, single)
