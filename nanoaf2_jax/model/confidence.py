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


def distance_one_hot(ca, dtype):
    """CA-CA distances [B, L, 3] -> one-hot bins [B, L, L, len(DISTANCE_EDGES) + 1]."""
    d = jnp.sqrt(jnp.sum((ca[:, :, None, :] - ca[:, None, :, :]) ** 2, axis=-1) + 1e-8)
    edges = jnp.asarray(DISTANCE_EDGES, d.dtype)
    index = jnp.sum(d[..., None] > edges, axis=-1)
    return jax.nn.one_hot(index, len(DISTANCE_EDGES) + 1, dtype=dtype)


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
        """single [B, L, c_s], pair [B, L, L, c_z], ca [B, L, 3] in Å -> logits [B, L, bins]."""
        single, pair, ca = (jax.lax.stop_gradient(x) for x in (single, pair, ca))
        p = run_sequential(self.pair_proj, pair) + self.distance_proj(distance_one_hot(ca, pair.dtype))
        p = run_sequential(self.pair_mlp, p)
        if mask is None:
            context = jnp.mean(p, axis=2)
        else:
            m = mask.astype(p.dtype)
            context = jnp.sum(p * m[:, None, :, None], axis=2) / jnp.maximum(jnp.sum(m, -1), 1.0)[:, None, None]
        return run_sequential(self.out, run_sequential(self.single_proj, single) + context)
