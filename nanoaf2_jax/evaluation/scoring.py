"""Scoring sampled structures against a native one: CA-RMSD, TM-score and lDDT per sample,
best and mean over samples, the best sample, and its plot."""

from __future__ import annotations

import math

import numpy as np

from .metrics import ca_rmsd, lddt_ca, tm_score

SCORE_KEYS = ("ca_rmsd", "tm_score", "lddt")
# Which direction is better, to pick the best sample per score.
_BEST = {"ca_rmsd": min, "tm_score": max, "lddt": max}


def score_prediction(pred_ca, native_ca) -> dict:
    """CA-RMSD after Kabsch superposition, TM-score normalised by the native length, CA lDDT."""
    return {
        "ca_rmsd": ca_rmsd(pred_ca, native_ca),
        "tm_score": tm_score(pred_ca, native_ca, L_target=len(native_ca)),
        "lddt": lddt_ca(pred_ca, native_ca)[0],
    }


def best_and_mean(scores: list[dict]) -> dict:
    """{'ca_rmsd_best', 'ca_rmsd_mean', ...} over samples; NaN scores are ignored."""
    out = {}
    for key in SCORE_KEYS:
        values = [s[key] for s in scores if not math.isnan(s[key])]
        out[f"{key}_best"] = _BEST[key](values) if values else float("nan")
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
    return out


def best_sample(scores: list[dict]) -> int:
    """Index of the sample with the highest TM-score (ties: the lower RMSD)."""
    return max(range(len(scores)), key=lambda k: (scores[k]["tm_score"], -scores[k]["ca_rmsd"]))


def write_plot(path, record_name: str, pred_ca, native_ca, plddt, scores: dict, k: int, n: int):
    from .plots import plot_prediction

    title = (f"{record_name}: sample {k} (best of {n} by TM-score)  TM {scores['tm_score']:.3f}  "
             f"CA-RMSD {scores['ca_rmsd']:.2f} Å  lDDT {scores['lddt']:.3f}")
    plot_prediction(path, pred_ca, native_ca, plddt, title=title)
