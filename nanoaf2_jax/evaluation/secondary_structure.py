"""Three-state secondary structure from CA atoms alone (P-SEA), and Q3: how much of it a
prediction shares with the native.

P-SEA (Labesse, Colloc'h, Pothier & Mornon, CABIOS 13:291, 1997) assigns α-helix ('a'), β-strand
('b') or coil ('c') from CA(i-1)…CA(i+3) distances, the CA bond angle and the CA dihedral. This is
biotite's reading of it (biotite.structure.annotate_sse, BSD-3, P. Kunzmann), the same cut-offs and
steps in plain numpy, so that evaluation needs no biotite at run time; tests/test_fold_metrics.py
checks the two agree on a real structure. CA atoms are all a predicted backbone and a native need
share, which is why Q3 is computed this way rather than with DSSP's hydrogen bonds.
"""

from __future__ import annotations

import numpy as np

# (low, high) windows: CA(i-1)-CA(i+1), CA(i-1)-CA(i+2), CA(i-1)-CA(i+3) distances (Å), the angle
# CA(i-1)-CA(i)-CA(i+1) and the dihedral CA(i-1)…CA(i+2) (radians).
_R_HELIX = np.deg2rad((89 - 12, 89 + 12))
_A_HELIX = np.deg2rad((50 - 20, 50 + 20))
_D3_HELIX = (5.3 - 0.5, 5.3 + 0.5)
_D4_HELIX = (6.4 - 0.6, 6.4 + 0.6)
_R_STRAND = np.deg2rad((124 - 14, 124 + 14))
_A_STRAND = np.deg2rad((-180, -125, 145, 180))  # two windows across the ±180° wrap
_D2_STRAND = (6.7 - 0.6, 6.7 + 0.6)
_D3_STRAND = (9.9 - 0.9, 9.9 + 0.9)
_D4_STRAND = (12.4 - 1.1, 12.4 + 1.1)
# A 3-residue strand seed still counts if its CAs have 5 CAs of other chains or strands at 4.2-5.2 Å.
_SHORT_STRAND_CONTACTS, _CONTACT_RANGE = 5, (4.2, 5.2)


def _within(x, window):
    with np.errstate(invalid="ignore"):  # NaN (undefined at the ends, across breaks) is outside
        return (x >= window[0]) & (x <= window[1])


def _dihedral(a, b, c, d):
    v1, v2, v3 = b - a, c - b, d - c
    v1, v2, v3 = (v / np.linalg.norm(v, axis=-1, keepdims=True) for v in (v1, v2, v3))
    n1, n2 = np.cross(v1, v2), np.cross(v2, v3)
    return np.arctan2(np.sum(np.cross(n1, n2) * v2, axis=-1), np.sum(n1 * n2, axis=-1))


def _angle(a, b, c):
    u, v = a - b, c - b
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _consecutive(mask, number):
    """True in every run of at least `number` consecutive True values."""
    seeds = np.ones(len(mask) - number + 1, bool) if len(mask) >= number else np.zeros(0, bool)
    for i in range(number):
        seeds &= mask[i:i + len(seeds)]
    out = np.zeros(len(mask), bool)
    for i in range(number):
        out[i:i + len(seeds)] |= seeds
    return out


def _extend(base, extension):
    """base's True runs widened by one residue each side where `extension` holds there."""
    change = np.diff(np.concatenate([[False], base]))
    left = np.concatenate([(change & base)[1:], [False]])
    right = change & ~base
    return base | ((left | right) & extension)


def _runs_with_contacts(ca, candidates):
    """The candidate runs whose CAs have, together, enough CAs at contact distance."""
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    with np.errstate(invalid="ignore"):
        contacts = np.sum((d > _CONTACT_RANGE[0]) & (d <= _CONTACT_RANGE[1]), axis=1) * candidates
    out = np.zeros(len(ca), bool)
    edges = np.concatenate([np.flatnonzero(np.diff(np.concatenate([[False], candidates]))), [len(ca)]])
    for start, stop in zip(edges[:-1], edges[1:]):
        if contacts[start:stop].sum() >= _SHORT_STRAND_CONTACTS:
            out[start:stop] = True
    return out


def psea(ca, residue_index=None) -> np.ndarray:
    """'a' (α-helix), 'b' (β-strand) or 'c' (coil) per residue of CA [L, 3]. With residue_index
    [L], a jump other than +1 is a chain break: no distance or angle spans it."""
    ca = np.asarray(ca, np.float64)
    n = len(ca)
    if n <= 5:
        return np.full(n, "c")
    real = np.ones(n, bool)
    if residue_index is not None:
        breaks = np.flatnonzero(np.diff(np.asarray(residue_index)) != 1) + 1
        # A virtual residue without coordinates at each break, removed at the end.
        ca = np.insert(ca, breaks, np.nan, axis=0)
        real = np.insert(real, breaks, False)
    m = len(ca)
    d2, d3, d4, r, a = (np.full(m, np.nan) for _ in range(5))
    d2[1:m - 1] = np.linalg.norm(ca[2:] - ca[:-2], axis=-1)
    d3[1:m - 2] = np.linalg.norm(ca[3:] - ca[:-3], axis=-1)
    d4[1:m - 3] = np.linalg.norm(ca[4:] - ca[:-4], axis=-1)
    r[1:m - 1] = _angle(ca[:-2], ca[1:-1], ca[2:])
    a[1:m - 2] = _dihedral(ca[:-3], ca[1:-2], ca[2:-1], ca[3:])

    relaxed_helix = _within(d3, _D3_HELIX) | _within(r, _R_HELIX)
    strict_helix = ((_within(d3, _D3_HELIX) & _within(d4, _D4_HELIX))
                    | (_within(r, _R_HELIX) & _within(a, _A_HELIX)))
    relaxed_strand = _within(d3, _D3_STRAND)
    strict_strand = ((_within(d2, _D2_STRAND) & _within(d3, _D3_STRAND) & _within(d4, _D4_STRAND))
                     | (_within(r, _R_STRAND)
                        & (_within(a, _A_STRAND[:2]) | _within(a, _A_STRAND[2:]))))

    helix = _extend(_consecutive(strict_helix, 5), relaxed_helix)
    short = _runs_with_contacts(ca, _consecutive(strict_strand, 3))
    strand = _extend(_consecutive(strict_strand, 4) | short, relaxed_strand)
    sse = np.full(m, "c")
    sse[helix] = "a"
    sse[strand] = "b"  # a residue meeting both is a strand, as in biotite
    return sse[real]


def q3(pred_ca, native_ca, native_residue_index=None) -> float:
    """The fraction of residues whose P-SEA state (helix, strand, coil) is the same in the
    prediction as in the native. The prediction is one unbroken chain; the native's numbering
    marks its breaks."""
    pred, native = psea(pred_ca), psea(native_ca, native_residue_index)
    if len(pred) != len(native):
        raise ValueError(f"{len(pred)} predicted residues for {len(native)} native ones")
    return float(np.mean(pred == native)) if len(pred) else float("nan")
