"""Long-range contact precision read from a predicted structure: did the model put residues far
apart in sequence next to each other where the native has them? A fold is mostly those contacts,
and an ideal helix, whatever its RMSD, has none.

The CASP convention (long range: sequence separation of at least 24; contact: CA-CA, here, under
8 Å) applied to a structure instead of a contact map: the predicted pairs are ranked by their
predicted CA distance, and the top L/5 are checked against the native.
"""

from __future__ import annotations

import numpy as np

from .metrics import distance_map

MIN_SEPARATION = 24
CONTACT_CUTOFF = 8.0  # Å, CA-CA


def _long_range_pairs(length: int, min_separation: int):
    i, j = np.triu_indices(length, k=min_separation)
    return i, j


def long_range_contacts(ca, min_separation: int = MIN_SEPARATION, cutoff: float = CONTACT_CUTOFF) -> int:
    """How many residue pairs |i - j| >= min_separation have CA-CA < cutoff."""
    ca = np.asarray(ca, np.float64)
    i, j = _long_range_pairs(len(ca), min_separation)
    return int(np.sum(np.linalg.norm(ca[i] - ca[j], axis=-1) < cutoff))


def top_long_range_precision(pred_ca, native_ca, fraction: float = 0.2,
                             min_separation: int = MIN_SEPARATION, cutoff: float = CONTACT_CUTOFF) -> float:
    """Precision of the top ⌊fraction · L⌋ (at least 1) long-range pairs of the prediction (closest predicted
    CA-CA first, ties by position): the share that are native contacts (CA-CA < cutoff).

    NaN when the native has no long-range contact: precision against nothing says nothing
    (an all-helix bundle shorter than ~50 residues, say)."""
    pred, native = np.asarray(pred_ca, np.float64), np.asarray(native_ca, np.float64)
    if pred.shape != native.shape:
        raise ValueError(f"expected two [L, 3] arrays of equal shape, got {pred.shape} and {native.shape}")
    return _precision_of_ranking(-distance_map(pred), native, fraction, min_separation, cutoff)


def top_long_range_precision_of_map(contact_probability, native_ca, fraction: float = 0.2,
                                    min_separation: int = MIN_SEPARATION,
                                    cutoff: float = CONTACT_CUTOFF) -> float:
    """The same precision for a predicted contact map [L, L] (e.g. the distogram head's
    P(CB-CB < 8 Å)), its most probable long-range pairs first: what the trunk knows of the
    fold, beside what the sampled structure shows of it."""
    prob, native = np.asarray(contact_probability, np.float64), np.asarray(native_ca, np.float64)
    if prob.shape != (len(native), len(native)):
        raise ValueError(f"expected an [L, L] map for L = {len(native)}, got {prob.shape}")
    return _precision_of_ranking(prob, native, fraction, min_separation, cutoff)


def _precision_of_ranking(score, native, fraction, min_separation, cutoff) -> float:
    """Share of native contacts among the top ⌊fraction · L⌋ long-range pairs by score [L, L]
    (highest first, ties by position); NaN if the native has no long-range contact."""
    i, j = _long_range_pairs(len(native), min_separation)
    native_contact = np.linalg.norm(native[i] - native[j], axis=-1) < cutoff
    if not native_contact.any():
        return float("nan")
    top = max(1, int(fraction * len(native)))
    order = np.argsort(-score[i, j], kind="stable")[:top]
    return float(np.mean(native_contact[order]))
