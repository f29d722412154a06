"""A pLDDT head that reads the structure it judges.

The reference's head maps the trunk's single representation to pLDDT bins: it sees the sequence
only, so every sample of a sequence gets the same pLDDT, and it is trained on how far a one-step
denoised CA lies from the truth at a random t, an average it can only learn as a constant.
This head follows AlphaFold 3's confidence module in miniature: it also embeds the predicted
structure's CA-CA distances (binned like AlphaFold 2's recycled distogram) beside the trunk's
pair representation, so a sample whose distances disagree with what the trunk expects can be
judged worse, residue by residue. Its inputs are detached: confidence training must not move the
trunk or the structure (AlphaFold 3 does the same).
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from .layers import LayerNorm, Linear, ReLU, run_sequential

# AlphaFold 2's recycling distogram: 15 edges from 3.375 to 21.375 Å (16 bins, the last open).
DISTANCE_EDGES = tuple(3.375 + 18.0 * k / 14 for k in range(15))


def distance_bin(ca):
    """CA-CA distances [B, L, 3] -> bin indices [B, L, L] in 0..len(DISTANCE_EDGES)."""
    d = jnp.sqrt(jnp.sum((ca[:, :, None, :] - ca[:, None, :, :]) ** 2, axis=-1) + 1e-8)
    edges = jnp.asarray(DISTANCE_EDGES, d.dtype)
    return jnp.sum(d[..., None] > edges, axis=-1)


class StructureConfidenceHead(nn.Module):
    num_bins: int
    c_hidden: int = 64

    def setup(self):
        self.single_proj = (LayerNorm(), Linear(self.c_hidden))
        self.pair_proj = (LayerNorm(), Linear(self.c_hidden))
        self.distance_proj = Linear(self.c_hidden, use_bias=False)
        self.pair_mlp = (ReLU(), Linear(self.c_hidden))
        self.out = (ReLU(), Linear(self.c_hidden), ReLU(), Linear(self.num_bins))

    def __call__(self, single, pair, ca, mask=None):
        """single [B, L, c_s], pair [B, L, L, c_z], mask [B, L] and ca [B·k, L, 3] in Å -> logits
        [B·k, L, bins]: k structures judged per row of single and pair (rows b·k, ..., b·k + k - 1
        are row b's, as jnp.repeat(x, k, axis=0) orders them; diffusion multiplicity and
        sampling judge several structures of one sequence).

        What depends on the row alone (the pair projection) is computed once per row, not once
        per structure, and the pair MLP's last linear layer is applied after the mean over
        partners j (a linear map commutes with a mean): the same logits up to float rounding,
        without the [B·k, L, L, c] products that made this head a fifth of a training step."""
        single, pair, ca = (jax.lax.stop_gradient(x) for x in (single, pair, ca))
        B, L = pair.shape[:2]
        k = ca.shape[0] // B
        if k * B != ca.shape[0]:
            raise ValueError(f"{ca.shape[0]} structures for {B} pair rows: not a multiple")
        pair_term = run_sequential(self.pair_proj, pair)  # [B, L, L, c]
        # one_hot · kernel picks one kernel row per pair: a gather computes the same values.
        kernel, _ = self.distance_proj.weights(len(DISTANCE_EDGES) + 1)
        distance_term = kernel.astype(pair_term.dtype)[distance_bin(ca)]  # [B·k, L, L, c]
        p = pair_term[:, None] + distance_term.reshape(B, k, L, L, -1)
        h = jax.nn.relu(p).reshape(B * k, L, L, -1)
        last = self.pair_mlp[1]
        w, b = last.weights(h.shape[-1])
        if mask is None:
            weights = jnp.full((B * k, L), 1.0 / L, h.dtype)
            bias_share = jnp.ones((B * k, L, 1), h.dtype)
        else:
            m = jnp.repeat(mask.astype(h.dtype), k, axis=0)
            n = jnp.maximum(jnp.sum(m, -1), 1.0)
            weights = m / n[:, None]
            bias_share = (jnp.sum(m, -1) / n)[:, None, None] * jnp.ones((1, L, 1), h.dtype)
        # Masked mean over j as a batched matrix-vector product (fast on XLA:CPU).
        mean_h = jnp.einsum("bijc,bj->bic", h, weights)
        context = jnp.dot(mean_h.reshape(-1, h.shape[-1]), w.astype(h.dtype)).reshape(B * k, L, -1)
        context = context + bias_share * b.astype(h.dtype)
        single_term = run_sequential(self.single_proj, single)
        single_term = jnp.repeat(single_term, k, axis=0) if k > 1 else single_term
        return run_sequential(self.out, single_term + context)
