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

from .layers import (LayerNorm, Linear, ReLU, compute_dtype, fused_linear, key_mask_bias, run_sequential,
                     softmax, split_heads)
from ..geometry.residue_constants import NUM_ONE_HOT

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
        zt = jnp.swapaxes(z, 1, 2)
        # Outgoing: out_ij = Σ_k a_ik b_jk = Σ_k a[i, k] bᵀ[k, j]; incoming: Σ_k aᵀ[i, k] b[k, j].
        # Each operand is projected from the pair or its transpose so that both arrive
        # channel-first as [c, rows, k] and [c, k, cols]: a plain batched matrix product with no
        # transposed copies, summing over k in the same order whatever the padding.
        m, mt = (None, None) if pair_mask is None else (pair_mask, jnp.swapaxes(pair_mask, 1, 2))
        (a_src, a_mask), (b_src, b_mask) = ((z, m), (zt, mt)) if self.mode == "outgoing" else ((zt, mt), (z, m))
        a = self._gated_projection(a_src, self.left_proj, self.left_gate, a_mask)
        b = self._gated_projection(b_src, self.right_proj, self.right_gate, b_mask)
        out = jnp.einsum("cbik,cbkj->cbij", a, b)
        out = jnp.transpose(out, (1, 2, 3, 0))
        out = self.output_proj(self.final_norm(out))
        return pair + jax.nn.sigmoid(self.output_gate(pair)) * out

    def _gated_projection(self, x, proj, gate, mask):
        """proj(x) · sigmoid(gate(x)) (· mask), as [c, B, rows, cols] for x [B, rows, cols, d]."""
        B, R, C, d = x.shape
        (wp, bp), (wg, bg) = proj.weights(d), gate.weights(d)
        dtype = compute_dtype(x, wp)
        h = wp.shape[-1]
        kernel = jnp.concatenate([wp, wg], axis=-1).astype(dtype)
        # Both projections as one product, then channel-first ([2h, B·rows·cols]). (Computing the
        # product directly in that layout, kernelᵀ·xᵀ, is faster at long lengths, but XLA:CPU then
        # sums in an order that depends on the number of rows, so padding would change results
        # in the last bit.)
        y = jnp.dot(x.reshape(-1, d).astype(dtype), kernel).T
        out = (y[:h] + bp.astype(dtype)[:, None]) * jax.nn.sigmoid(y[h:] + bg.astype(dtype)[:, None])
        out = out.reshape(h, B, R, C)
        if mask is not None:
            out = out * mask.astype(dtype)[None]
        return out


# ---------------------------------------------------------------------------------------------
# Row attention of the triangular attention, a few rows at a time
# ---------------------------------------------------------------------------------------------

# Rows per chunk are chosen so that one chunk's logits [B, rows, H, L, L] take about this many
# bytes: small enough to stay in the CPU's caches, large enough for efficient products.
ROW_CHUNK_BYTES = 2 * 2**20


def row_chunk_size(batch: int, rows: int, heads: int, length: int, itemsize: int) -> int:
    per_row = batch * heads * length * length * itemsize
    return int(max(1, min(rows, ROW_CHUNK_BYTES // max(per_row, 1))))


def _row_attention_chunk(q, k, v, bias, mask_bias):
    """Attention of the rows of one chunk: q, k, v [B, c, J, H, D], bias [B, H, J, K],
    mask_bias [B, c, K] -> (out [B, c, J, H, D], attn [B, c, H, J, K]). The reference's
    operation order: q·k, / sqrt(D), + triangle bias, (+ key mask), softmax, · v."""
    logits = jnp.einsum("bijhd,bikhd->bihjk", q, k) / (q.shape[-1] ** 0.5)
    logits = logits + bias[:, None]
    logits = logits + mask_bias[:, :, None, None, :]
    attn = softmax(logits, axis=-1)
    return jnp.einsum("bihjk,bikhd->bijhd", attn, v), attn


def _to_chunks(x, chunk):
    """[B, I, ...] -> [I / chunk, B, chunk, ...], rows padded with zeros to a multiple of chunk."""
    B, I = x.shape[:2]
    n = -(-I // chunk)
    x = jnp.pad(x, [(0, 0), (0, n * chunk - I)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(B, n, chunk, *x.shape[2:]), 1, 0)


def _from_chunks(x, rows):
    """Inverse of _to_chunks."""
    n, B, chunk = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(B, n * chunk, *x.shape[3:])[:, :rows]


@jax.custom_vjp
def row_attention(q, k, v, bias, mask_bias):
    """out[b, i, j] = Σ_k softmax_k(q_ij · k_ik / sqrt(D) + bias[b, :, j, k] + mask_bias[b, i, k]) v_ik
    for q, k, v [B, I, J, H, D], bias [B, H, J, K] and mask_bias [B, I, K].

    Computed a chunk of rows i at a time (lax.map), and differentiated by recomputing each
    chunk's softmax in the backward pass, so the [B, I, H, J, K] logits never exist at once:
    memory O(L^2) instead of O(L^3), and each chunk's logits stay in cache. The forward pass
    applies the reference's operations in the reference's order to every row; the backward pass
    computes the same gradient, some sums in another order (float rounding only).
    """
    return _row_attention_fwd(q, k, v, bias, mask_bias)[0]


def _row_attention_fwd(q, k, v, bias, mask_bias):
    B, I, J, H, _ = q.shape
    chunk = row_chunk_size(B, I, H, J, q.dtype.itemsize)
    chunks = tuple(_to_chunks(x, chunk) for x in (q, k, v, mask_bias))
    out = jax.lax.map(lambda c: _row_attention_chunk(*c[:3], bias, c[3])[0], chunks)
    out = _from_chunks(out, I)
    return out, (q, k, v, bias, mask_bias, out)


def _row_attention_bwd(res, g):
    q, k, v, bias, mask_bias, out = res
    B, I, J, H, D = q.shape
    chunk = row_chunk_size(B, I, H, J, q.dtype.itemsize)
    # The softmax backward needs Σ_k attn_jk · dattn_jk = Σ_k attn_jk (g_j · v_k) = g_j · out_j:
    # computed from the [B, I, J, H, D] output instead of the [B, I, H, J, K] probabilities.
    delta = jnp.dot((g * out).reshape(-1, D), jnp.ones((D,), g.dtype)).reshape(B, I, J, H)
    delta = jnp.transpose(delta, (0, 1, 3, 2))  # [B, I, H, J]
    chunks = tuple(_to_chunks(x, chunk) for x in (q, k, v, mask_bias, g, delta))

    def body(d_bias, c):
        qc, kc, vc, mc, gc, delta_c = c
        _, attn = _row_attention_chunk(qc, kc, vc, bias, mc)
        dv = jnp.einsum("bihjk,bijhd->bikhd", attn, gc)
        d_attn = jnp.einsum("bijhd,bikhd->bihjk", gc, vc)
        d_logits = attn * (d_attn - delta_c[..., None])
        # Σ over the chunk's rows as a product with ones (XLA:CPU reduces leading axes slowly).
        d_bias = d_bias + jnp.einsum("bi,bihjk->bhjk", jnp.ones(d_logits.shape[:2], d_logits.dtype), d_logits)
        d_scores = d_logits / (D**0.5)
        dq = jnp.einsum("bihjk,bikhd->bijhd", d_scores, kc)
        dk = jnp.einsum("bihjk,bijhd->bikhd", d_scores, qc)
        return d_bias, (dq, dk, dv)

    d_bias, (dq, dk, dv) = jax.lax.scan(body, jnp.zeros_like(bias), chunks)
    return (_from_chunks(dq, I), _from_chunks(dk, I), _from_chunks(dv, I), d_bias, jnp.zeros_like(mask_bias))


row_attention.defvjp(_row_attention_fwd, _row_attention_bwd)


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
        q, k, v, tri_bias = fused_linear(z, (self.to_q, self.to_k, self.to_v, self.bias_proj))
        q, k, v = (split_heads(x, self.n_heads) for x in (q, k, v))
        # Triangle bias b_jk from the pair itself, shared by every row i (the reference's
        # comment says it broadcasts over j; its code broadcasts over i, as AlphaFold2 does).
        bias = jnp.transpose(tri_bias, (0, 3, 1, 2))  # [b, h, j, k]
        if pair_mask is None:
            mask_bias = jnp.zeros(pair.shape[:3], q.dtype)  # adding 0.0 changes no logit
        else:
            mask_bias = key_mask_bias(pair_mask, q.dtype)
        out = row_attention(q, k, v, bias, mask_bias).reshape(pair.shape)
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
        q, k, v, gate = fused_linear(s, (self.to_q, self.to_k, self.to_v, self.gate))
        q, k, v = (split_heads(x, self.n_heads) for x in (q, k, v))
        logits = jnp.einsum("bihd,bjhd->bhij", q, k) / ((self.c_s // self.n_heads) ** 0.5)
        logits = logits + jnp.transpose(self.pair_bias(z), (0, 3, 1, 2))
        if mask is not None:
            logits = logits + key_mask_bias(mask, logits.dtype)[:, None, None, :]
        attn = softmax(logits, axis=-1)
        out = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(single.shape)
        return single + jax.nn.sigmoid(gate) * self.to_out(out)


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
