"""Scoring sampled structures against a native one: CA-RMSD, TM-score and lDDT per sample, the
fold-level Q3 and long-range contact precision, and over the whole backbone (N, CA, C RMSD, frame rotation error, peptide bond geometry), best and
mean over samples, the best sample, and its plot."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .backbone_metrics import backbone_scores
from .contacts import top_long_range_precision
from .metrics import ca_rmsd, lddt_ca, radius_of_gyration, tm_score
from .secondary_structure import q3

SCORE_KEYS = ("ca_rmsd", "tm_score", "lddt", "q3", "long_range_precision", "rg_ratio")
BACKBONE_KEYS = ("backbone_rmsd", "rotation_error_deg", "c_n_within_0.1", "ca_ca_within_0.1")
# Which direction is better, to pick the best sample per score.
_BEST = {"ca_rmsd": min, "tm_score": max, "lddt": max, "q3": max, "long_range_precision": max,
         "rg_ratio": lambda values: min(values, key=lambda v: abs(math.log(v)) if v > 0 else math.inf),
         "backbone_rmsd": min,
         "rotation_error_deg": min, "c_n_within_0.1": max, "ca_ca_within_0.1": max}


def score_prediction(pred_ca, native_ca, pred_backbone=None, native_backbone=None,
                     native_residue_index=None) -> dict:
    """CA-RMSD after Kabsch superposition, TM-score normalised by the native length, CA lDDT,
    Q3 of P-SEA states (native_residue_index marks the native's chain breaks), precision of the
    top L/5 long-range contacts (NaN if the native has none), and the radius of gyration over
    the native's (rg_ratio: a model that has not learned a fold tends to a compact blob of the
    size of its training crops, whatever the chain's length); with both backbones (N, CA, C)
    also backbone_metrics.backbone_scores."""
    scores = {
        "ca_rmsd": ca_rmsd(pred_ca, native_ca),
        "tm_score": tm_score(pred_ca, native_ca, L_target=len(native_ca)),
        "lddt": lddt_ca(pred_ca, native_ca)[0],
        "q3": q3(pred_ca, native_ca, native_residue_index),
        "long_range_precision": top_long_range_precision(pred_ca, native_ca),
        "rg_ratio": radius_of_gyration(pred_ca) / max(radius_of_gyration(native_ca), 1e-9),
    }
    if pred_backbone is not None and native_backbone is not None:
        scores.update(backbone_scores(pred_backbone, native_backbone))
    return scores


def plddt_calibration(plddt, pred_ca, native_ca) -> dict:
    """How well pLDDT [N, L] (in [0, 1]) predicts the lDDT-Cα of each of the N samples.

    Returns mean_plddt and mean_residue_lddt (both 0-100, over residues and samples),
    plddt_error (their difference) and, per sample, its mean pLDDT and the per-residue pLDDT and
    lDDT-Cα (0-100; NaN where a residue has no neighbour within 15 Å) under "samples", and with
    N ≥ 2 samples each one's agreement with the others (sample_agreement) too."""
    plddt = np.asarray(plddt, np.float64)
    lddt = np.stack([lddt_ca(ca, native_ca)[1] for ca in pred_ca])
    samples = [{"mean_plddt": 100.0 * float(np.mean(p_row)),
                "plddt_per_residue": [round(100.0 * float(v), 2) for v in p_row],
                "lddt_per_residue": [round(100.0 * float(v), 2) for v in l_row]}
               for p_row, l_row in zip(plddt, lddt)]
    agreement = sample_agreement(pred_ca)
    if agreement is not None:
        for sample, a_row in zip(samples, agreement):
            sample["agreement_per_residue"] = [round(float(v), 2) for v in a_row]
    mean_plddt = 100.0 * float(np.mean(plddt))
    mean_lddt = 100.0 * float(np.nanmean(lddt))
    return {"mean_plddt": mean_plddt, "mean_residue_lddt": mean_lddt,
            "plddt_error": mean_plddt - mean_lddt, "samples": samples}


def sample_agreement(pred_ca) -> np.ndarray | None:
    """Per-residue agreement of N ≥ 2 samples [N, L, 3]: for each sample and residue, the mean
    lDDT-Cα (0-100) of the sample scored against each other sample as the reference, NaN where a
    residue has no neighbour within 15 Å. Where a model knows a structure, samples from different
    noise agree; where it guesses, they scatter (the spread of an ensemble as an error estimate).
    None for a single sample."""
    pred_ca = np.asarray(pred_ca, np.float64)
    n = len(pred_ca)
    if n < 2:
        return None
    rows = []
    for a in range(n):
        others = np.stack([lddt_ca(pred_ca[a], pred_ca[b])[1] for b in range(n) if b != a])
        with warnings.catch_warnings():  # a residue with no neighbour in any other sample: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append(100.0 * np.nanmean(others, axis=0))
    return np.stack(rows)


def pearson_r(x, y) -> float:
    """Pearson correlation of the finite pairs; NaN if fewer than 2 or either is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def sample_backbone(result: dict, k: int):
    """(N, CA, C) of sample k of a sampling result."""
    return result["coords_N"][k], result["coords_CA"][k], result["coords_C"][k]


def best_and_mean(scores: list[dict]) -> dict:
    """{'ca_rmsd_best', 'ca_rmsd_mean', ...} over samples; NaN scores are ignored."""
    out = {}
    for key in tuple(k for k in SCORE_KEYS + BACKBONE_KEYS if scores and k in scores[0]):
        values = [s[key] for s in scores if key in s and not math.isnan(s[key])]
        out[f"{key}_best"] = _BEST[key](values) if values else float("nan")
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
    return out


def best_sample(scores: list[dict]) -> int:
    """Index of the sample with the highest TM-score (ties: the lower RMSD)."""
    return max(range(len(scores)), key=lambda k: (scores[k]["tm_score"], -scores[k]["ca_rmsd"]))


def write_plot(path, record_name: str, pred_ca, native_ca, plddt, scores: dict, k: int, n: int,
               pred_backbone=None, native_backbone=None, sequence=None):
    from .plots import plot_prediction

    title = (f"{record_name}: sample {k} (best of {n} by TM-score)  TM {scores['tm_score']:.3f}  "
             f"CA-RMSD {scores['ca_rmsd']:.2f} Å  lDDT {scores['lddt']:.3f}")
    plot_prediction(path, pred_ca, native_ca, plddt, title=title, pred_backbone=pred_backbone,
                    native_backbone=native_backbone, sequence=sequence)
