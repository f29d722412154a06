"""AlphaFold 2's distogram head and loss (suppl. 1.9.8): the pair representation predicts the
binned CB-CB distance of every residue pair.

The trunk of a diffusion model otherwise learns geometry only through the denoiser's losses on
frames; the distogram scores every pair of the pair representation directly against the native,
which is the densest supervision a structure gives (L² targets per chain against L frames).
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from .layers import Linear
from .reductions import pairwise_sum
from ..geometry.virtual_cb import virtual_cb

# AlphaFold 2: 64 bins, 63 edges evenly from 2.3125 to 21.6875 Å (the last bin open).
NUM_DISTOGRAM_BINS = 64
DISTOGRAM_EDGES = tuple(2.3125 + (21.6875 - 2.3125) * k / 62 for k in range(63))


class DistogramHead(nn.Module):
    num_bins: int = NUM_DISTOGRAM_BINS

    def setup(self):
        self.proj = Linear(self.num_bins)

    def __call__(self, pair):
        """pair [B, L, L, c_z] -> logits [B, L, L, bins], symmetric in (i, j) as distances are."""
        logits = self.proj(pair)
        return logits + jnp.swapaxes(logits, 1, 2)


# CASP's contact: residues whose CB atoms are closer than 8 Å.
CONTACT_DISTANCE = 8.0


def contact_probability(logits, cutoff: float = CONTACT_DISTANCE):
    """P(CB-CB < cutoff) [..., L, L] from distogram logits [..., L, L, bins]: the mass of the
    bins that end at or under the cutoff (for 8 Å: under 7.94 Å, the bins being 0.31 Å wide)."""
    below = sum(edge <= cutoff for edge in DISTOGRAM_EDGES)
    return jnp.sum(jax.nn.softmax(logits, axis=-1)[..., :below], axis=-1)


def distogram_targets(n, ca, c):
    """Bin index [B, L, L] of every CB-CB distance (Å) of the backbone N, CA, C [B, L, 3]."""
    cb = virtual_cb(n, ca, c)
    d2 = jnp.sum((cb[:, :, None, :] - cb[:, None, :, :]) ** 2, axis=-1)
    edges = jnp.asarray(DISTOGRAM_EDGES, d2.dtype) ** 2
    return jnp.sum(d2[..., None] > edges, axis=-1)


def distogram_loss(logits, n, ca, c, mask, total=None):
    """Mean cross-entropy over the real residue pairs (i ≠ j included, as in AlphaFold 2).

    total: the number of real pairs of a larger batch this one is part of (accumulation)."""
    targets = distogram_targets(n, ca, c)
    log_p = jax.nn.log_softmax(logits.astype(ca.dtype), axis=-1)
    ce = -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    m = mask.astype(ce.dtype)
    pm = m[:, :, None] * m[:, None, :]
    denominator = pairwise_sum(pm) if total is None else total
    return pairwise_sum(ce * pm) / jnp.maximum(denominator, 1.0)
