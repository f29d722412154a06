"""FAPE, direct frame loss, peptide-bond loss and pLDDT loss. Pure functions of batched arrays
[B, L, ...]."""

import jax
import jax.numpy as jnp

from ..geometry.rigid import Rigid, rotation_angle_between
from .reductions import pairwise_mean, pairwise_sum

FAPE_CLAMP = 10.0
PLDDT_DISTANCE_SCALE = 15.0


def _masked_mean(values, weights, total=None):
    """sum(values·w) / max(sum(w), 1): the reference's normalisation for masked losses, summed
    pairwise so that float32 losses over B·L·L terms are as accurate on every CPU.

    total: sum(w) of a larger batch this one is part of (gradient accumulation: each
    micro-batch divides by the whole batch's weight, so the parts add up to its mean)."""
    denominator = pairwise_sum(weights) if total is None else total
    return pairwise_sum(values * weights) / jnp.maximum(denominator, 1.0)


def _local_points(frames: Rigid, points):
    """Every point expressed in every frame: [B, F, A, 3] = R_fᵀ (x_a - t_f)."""
    delta = points[:, None, :, :] - frames.trans[:, :, None, :]
    return jnp.einsum("bfji,bfaj->bfai", frames.rots, delta)


def fape(pred_frames: Rigid, true_frames: Rigid, pred_points, true_points, mask=None,
         clamp=FAPE_CLAMP, point_mask=None, total=None):
    """Frame Aligned Point Error of points [B, A, 3] (the reference: the CA atoms, A = L) in
    every frame [B, L], clamped per (frame, point) pair. mask [B, L] marks real frames and, unless
    point_mask [B, A] is given, real points. total: see _masked_mean.

    Invariant to a global rigid motion of either structure: both sides are compared in their
    own local frames.
    """
    diff = _local_points(pred_frames, pred_points) - _local_points(true_frames, true_points)
    error = jnp.sqrt(jnp.sum(diff**2, axis=-1) + 1e-8)
    if clamp > 0:
        error = jnp.minimum(error, clamp)
    if mask is None:
        return pairwise_mean(error)
    m = mask.astype(error.dtype)
    pm = m if point_mask is None else point_mask.astype(error.dtype)
    return _masked_mean(error, m[:, :, None] * pm[:, None, :], total)


def frame_loss(pred_frames: Rigid, true_frames: Rigid, mask=None, total=None):
    """(translation MSE summed over xyz, squared geodesic rotation angle), masked means
    (total: see _masked_mean)."""
    m = jnp.ones(pred_frames.trans.shape[:-1], pred_frames.trans.dtype) if mask is None else mask
    m = m.astype(pred_frames.trans.dtype)
    trans_sq = jnp.sum((pred_frames.trans - true_frames.trans) ** 2, axis=-1)
    angle, _ = rotation_angle_between(pred_frames.rots, true_frames.rots)
    return _masked_mean(trans_sq, m, total), _masked_mean(angle**2, m, total)


# C(i)-N(i+1) of real backbones (Engh & Huber 1991; AlphaFold 2's between-residue bond).
PEPTIDE_C_N_LENGTH = 1.329


def peptide_bond_mask(mask, residue_index=None):
    """[B, L-1]: the bonds C(i)-N(i+1) between two real residues, numbered consecutively where
    residue_index [B, L] is given (a gap in the numbering is a chain break, not a bond)."""
    bonds = mask[:, 1:].astype(bool) & mask[:, :-1].astype(bool)
    if residue_index is not None:
        bonds = bonds & (residue_index[:, 1:] - residue_index[:, :-1] == 1)
    return bonds


def peptide_bond_loss(pred_c, pred_n, bond_mask, total=None, row_weight=None):
    """Mean |‖N(i+1) - C(i)‖ - 1.329 Å| over the bonds of bond_mask [B, L-1] (pred_c/pred_n
    [B, L, 3] in Å). An L1 term like FAPE, so its pull does not fade as the error shrinks.
    row_weight [B]: each row's bonds count this much in the sum; the denominator stays every
    bond of bond_mask (or total, see _masked_mean), so rows weighted 0 dilute the mean rather
    than drop out of it, and the same denominators serve gradient accumulation.

    Why a separate term: C(i) and N(i+1) are placed ideally in two different frames, so the bond
    between them is only as good as both frames' translations and rotations together; FAPE and
    the frame loss score each frame's error, not this joint one (AlphaFold 2's structural
    violation loss scores it too, with a tolerance far wider than 0.1 Å)."""
    d = jnp.sqrt(jnp.sum((pred_n[:, 1:] - pred_c[:, :-1]) ** 2, axis=-1) + 1e-8)
    err = jnp.sqrt((d - PEPTIDE_C_N_LENGTH) ** 2 + 1e-8)
    bonds = bond_mask.astype(err.dtype)
    denominator = pairwise_sum(bonds) if total is None else total
    weights = bonds if row_weight is None else bonds * row_weight[:, None].astype(err.dtype)
    return pairwise_sum(err * weights) / jnp.maximum(denominator, 1.0)


def plddt_targets(pred_ca, true_ca, num_bins):
    """The reference's per-residue 'lDDT' target: clamp(1 - |Δ CA| / 15, 0, 1), binned."""
    dist = jnp.sqrt(jnp.sum((pred_ca - true_ca) ** 2, axis=-1))
    lddt = jnp.clip(1.0 - dist / PLDDT_DISTANCE_SCALE, 0.0, 1.0)
    return jnp.clip(jnp.floor(lddt * (num_bins - 1)).astype(jnp.int32), 0, num_bins - 1)


LDDT_CUTOFF = 15.0
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


def lddt_ca(pred_ca, true_ca, mask=None):
    """Per-residue lDDT-Cα [B, L] in [0, 1]: for the pairs within 15 Å in the true structure, the
    fraction of distance errors below 0.5, 1, 2 and 4 Å (averaged over the four), as AlphaFold
    scores it. Superposition-free. A residue with no real neighbour within 15 Å scores 1."""
    def dists(x):
        return jnp.sqrt(jnp.sum((x[:, :, None, :] - x[:, None, :, :]) ** 2, axis=-1) + 1e-10)

    d_true, d_pred = dists(true_ca), dists(pred_ca)
    L = true_ca.shape[1]
    include = (d_true < LDDT_CUTOFF) & ~jnp.eye(L, dtype=bool)
    if mask is not None:
        include = include & mask[:, :, None].astype(bool) & mask[:, None, :].astype(bool)
    err = jnp.abs(d_pred - d_true)
    score = sum((err < thr).astype(true_ca.dtype) for thr in LDDT_THRESHOLDS) / len(LDDT_THRESHOLDS)
    inc = include.astype(true_ca.dtype)
    n = jnp.sum(inc, axis=-1)
    return jnp.where(n > 0, jnp.sum(score * inc, axis=-1) / jnp.maximum(n, 1.0), 1.0)


def lddt_ca_targets(pred_ca, true_ca, num_bins, mask=None):
    """lDDT-Cα binned to the nearest of the head's evenly spaced bin values (0, ..., 1)."""
    lddt = lddt_ca(pred_ca, true_ca, mask)
    return jnp.clip(jnp.round(lddt * (num_bins - 1)).astype(jnp.int32), 0, num_bins - 1)


def plddt_loss(logits, pred_ca, true_ca, mask=None, target="ca_distance", total=None):
    """Cross-entropy of the pLDDT head against binned targets; no gradient into pred_ca.

    target: "ca_distance" (the reference's clamp(1 - |Δ CA| / 15) on absolute positions) or
    "lddt_ca" (the prediction's real lDDT-Cα). total: see _masked_mean."""
    pred_ca = jax.lax.stop_gradient(pred_ca)
    if target == "lddt_ca":
        targets = lddt_ca_targets(pred_ca, true_ca, logits.shape[-1], mask)
    else:
        targets = plddt_targets(pred_ca, true_ca, logits.shape[-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    if mask is None:
        return pairwise_mean(nll)
    return _masked_mean(nll, mask.astype(nll.dtype), total)


def plddt_from_logits(logits):
    """Expected bin centre in [0, 1], bins evenly spaced from 0 to 1 as in the reference."""
    bins = jnp.linspace(0.0, 1.0, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1)
