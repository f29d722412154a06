"""Structure-comparison metrics on CA coordinates: Kabsch RMSD, TM-score, lDDT-CA.

Plain numpy in float64. Every function takes (pred, native) arrays [L, 3] with the same residue
correspondence (row i of pred is residue i of native) and an optional boolean mask [L] that
selects the residues to compare (e.g. those resolved in the native structure).
"""

from __future__ import annotations

import numpy as np


def _prepare(pred, native, mask=None):
    pred = np.asarray(pred, dtype=np.float64)
    native = np.asarray(native, dtype=np.float64)
    if pred.ndim != 2 or pred.shape[-1] != 3 or pred.shape != native.shape:
        raise ValueError(f"expected two [L, 3] arrays of equal shape, got {pred.shape} and "
                         f"{native.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if mask.shape[0] != pred.shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} entries for {pred.shape[0]} residues")
        pred, native = pred[mask], native[mask]
    return pred, native


def distance_map(ca) -> np.ndarray:
    ca = np.asarray(ca, dtype=np.float64)
    diff = ca[:, None, :] - ca[None, :, :]
    return np.sqrt(np.sum(diff * diff, axis=-1))


def _kabsch_batched(P, Q, w):
    """Weighted Kabsch for a batch: P [B, L, 3] (or one [L, 3] for all) onto Q [L, 3] with
    weights w [B, L].

    Returns R [B, 3, 3], t [B, 3] such that P @ R^T + t best matches Q.
    """
    # Matrix products rather than einsum (np.einsum of three operands runs a naive loop): this is
    # the evaluation's hottest code, TM-score's search calling it ~20 times on ~6L seeds. With one
    # P for every row of w ([L, 3]), the weighted covariance is a single [B, L] x [L, 9] product:
    # Σ w (p - p̄)(q - q̄)ᵀ = Σ w p qᵀ - (Σ w) p̄ q̄ᵀ.
    wsum = np.sum(w, axis=-1, keepdims=True)
    q_mean = (w @ Q) / wsum
    if P.ndim == 2:
        p_mean = (w @ P) / wsum
        outer = (w @ (P[:, :, None] * Q[:, None, :]).reshape(-1, 9)).reshape(-1, 3, 3)
    else:
        p_mean = (w[:, None, :] @ P)[:, 0] / wsum
        outer = np.swapaxes(P * w[..., None], 1, 2) @ Q
    H = outer - wsum[..., None] * p_mean[:, :, None] * q_mean[:, None, :]
    U, _, Vt = np.linalg.svd(H)
    V, Ut = np.swapaxes(Vt, 1, 2), np.swapaxes(U, 1, 2)
    # Flip the axis of the smallest singular value when the best orthogonal map is a
    # reflection, so the result is always a proper rotation (det +1).
    d = np.sign(np.linalg.det(V @ Ut))
    d = np.where(d == 0, 1.0, d)
    D = np.ones((w.shape[0], 3))
    D[:, 2] = d
    R = (V * D[:, None, :]) @ Ut
    t = q_mean - (R @ p_mean[..., None])[..., 0]
    return R, t


def kabsch(P, Q, mask=None):
    """Optimal proper rotation R and translation t superposing P onto Q: P @ R.T + t ~ Q."""
    P, Q = _prepare(P, Q, mask)
    if P.shape[0] == 0:
        raise ValueError("cannot superpose zero points")
    R, t = _kabsch_batched(P[None], Q, np.ones((1, P.shape[0])))
    return R[0], t[0]


def apply_transform(x, R, t):
    return np.asarray(x, dtype=np.float64) @ np.asarray(R).T + np.asarray(t)


def ca_rmsd(pred, native, mask=None) -> float:
    """RMSD after optimal superposition of pred onto native."""
    pred, native = _prepare(pred, native, mask)
    R, t = kabsch(pred, native)
    diff = apply_transform(pred, R, t) - native
    return float(np.sqrt(np.mean(np.sum(diff * diff, axis=-1))))


def tm_d0(length) -> float:
    """TM-score distance scale; as TM-score/TM-align, 0.5 A for chains of 21 or fewer residues.

    (1.24 * cbrt(L - 15) - 1.8 is below 0.5 up to L = 21 and undefined below 15.)
    """
    if length <= 21:
        return 0.5
    return max(1.24 * np.cbrt(length - 15.0) - 1.8, 0.5)


def _seed_fragments(n):
    """Seed fragments of TM-score's search: lengths n, n/2, n/4, ... down to 4, every start."""
    min_len = min(4, n)
    lengths = []
    for i in range(6):
        frag = int(n / 2.0 ** i)
        if frag <= min_len:
            lengths.append(min_len)
            break
        lengths.append(frag)
    else:
        lengths.append(min_len)
    starts = [(frag, s) for frag in lengths for s in range(n - frag + 1)]
    w = np.zeros((len(starts), n))
    for row, (frag, s) in enumerate(starts):
        w[row, s:s + frag] = 1.0
    return w


def _select_within(d2, cutoff):
    """Residues closer than cutoff, widening it by 0.5 A until each row has at least 3."""
    n = d2.shape[-1]
    cut = np.full(d2.shape[0], cutoff)
    sel = d2 < cut[:, None] ** 2
    if n <= 3:
        return sel
    while True:
        short = sel.sum(axis=-1) < 3
        if not short.any():
            return sel
        cut[short] += 0.5
        sel[short] = d2[short] < cut[short, None] ** 2


def _tm_search(pred, native, length_norm, n_iter=20, batch=512):
    """TM-score maximised over superpositions: TM-score's (and TM-align's final) heuristic.

    From every seed fragment: superpose on the fragment, keep residues within d0_search - 1,
    then n_iter times superpose on the kept residues and keep those within d0_search + 1
    (relaxing the cutoff until at least 3 are kept). The best score seen anywhere wins.
    Seeds run as a batch; a seed that has converged just repeats itself, which leaves the
    maximum unchanged, so running all seeds for n_iter rounds matches the early-exit loop.
    """
    n = pred.shape[0]
    d0 = tm_d0(length_norm)
    d0_search = min(max(d0, 4.5), 8.0)
    best_score, best_R, best_t = -1.0, np.eye(3), np.zeros(3)

    # |R p + t - q|² expanded into products of [B, k] and [k, L] matrices, never forming the
    # [B, L, 3] moved copies: |p|² + |t - q|² + 2 (Rᵀt)·p - 2 Σ_ij R_ij q_i p_j.
    p2, q2 = np.sum(pred ** 2, axis=-1), np.sum(native ** 2, axis=-1)
    qp = (native[:, :, None] * pred[:, None, :]).reshape(n, 9)

    def score(R, t):
        d2 = (p2 + q2 + np.sum(t ** 2, axis=-1)[:, None] - 2.0 * t @ native.T
              + 2.0 * np.einsum("bji,bj->bi", R, t) @ pred.T - 2.0 * R.reshape(-1, 9) @ qp.T)
        d2 = np.maximum(d2, 0.0)
        return np.sum(1.0 / (1.0 + d2 / d0 ** 2), axis=-1) / length_norm, d2

    seeds = _seed_fragments(n)
    for start in range(0, seeds.shape[0], batch):
        w = seeds[start:start + batch]
        P = pred  # the same points under every seed's weights
        cutoff = d0_search - 1.0
        for _ in range(n_iter + 1):
            R, t = _kabsch_batched(P, native, w)
            tm, d2 = score(R, t)
            k = int(np.argmax(tm))
            if tm[k] > best_score:
                best_score, best_R, best_t = float(tm[k]), R[k], t[k]
            w = _select_within(d2, cutoff).astype(np.float64)
            cutoff = d0_search + 1.0
    return best_score, best_R, best_t


def tm_score(pred, native, mask=None, L_target=None) -> float:
    """TM-score of pred against native, normalised by the native length.

    L_target defaults to the number of compared residues (mask.sum(), or L); pass the full
    native length when the mask drops residues that should still count as missed. d0 follows
    TM-score: 1.24 * (L_target - 15)^(1/3) - 1.8, at least 0.5 (0.5 for L_target <= 21).
    """
    pred, native = _prepare(pred, native, mask)
    n = pred.shape[0]
    length_norm = float(n if L_target is None else L_target)
    if n == 0:
        return 0.0
    if length_norm <= 0:
        raise ValueError("L_target must be positive")
    return _tm_search(pred, native, length_norm)[0]


def tm_superposition(pred, native, mask=None, L_target=None):
    """(TM-score, R, t): the score and the superposition P @ R.T + t that attains it."""
    pred, native = _prepare(pred, native, mask)
    length_norm = float(pred.shape[0] if L_target is None else L_target)
    return _tm_search(pred, native, length_norm)


def radius_of_gyration(ca) -> float:
    """Root-mean-square distance (Å) of the CA atoms [L, 3] from their centroid."""
    ca = np.asarray(ca, np.float64)
    return float(np.sqrt(np.mean(np.sum((ca - ca.mean(axis=0)) ** 2, axis=-1))))


def lddt_ca(pred, native, mask=None, cutoff=15.0, thresholds=(0.5, 1.0, 2.0, 4.0)):
    """lDDT on CA atoms (no stereochemistry checks), AlphaFold / OpenStructure convention.

    Scored pairs: i != j, both in mask, native distance < cutoff. A pair-threshold check
    passes when |d_pred - d_native| < threshold. Returns (global, per_residue):
    global = passed checks / all checks over every scored pair (what AlphaFold's lddt() with
    per_residue=False and OpenStructure's global lDDT compute; it weights residues by their
    number of neighbours, so it is not the plain mean of per-residue scores);
    per_residue[i] = the same ratio over the pairs (i, j). Residues outside the mask or with
    no scored pair get NaN (AlphaFold's epsilon terms would give them 1.0). Global is NaN if
    no pair is scored.
    """
    pred = np.asarray(pred, dtype=np.float64)
    native = np.asarray(native, dtype=np.float64)
    _prepare(pred, native, mask)
    n = pred.shape[0]
    valid = np.ones(n, bool) if mask is None else np.asarray(mask, bool).reshape(-1)
    d_native = distance_map(native)
    d_pred = distance_map(pred)
    scored = (d_native < cutoff) & valid[:, None] & valid[None, :] & ~np.eye(n, dtype=bool)
    err = np.abs(d_pred - d_native)
    preserved = np.mean([err < thr for thr in thresholds], axis=0)
    pairs_per_res = scored.sum(axis=-1)
    kept_per_res = np.sum(preserved * scored, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_residue = np.where(pairs_per_res > 0, kept_per_res / pairs_per_res, np.nan)
    total = pairs_per_res.sum()
    global_score = float(kept_per_res.sum() / total) if total > 0 else float("nan")
    return global_score, per_residue
