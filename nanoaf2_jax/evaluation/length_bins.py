"""The evaluation's summary by protein length: mean and median of the fold-level scores per
length bin, beside an ideal α-helix of each protein's length scored the same way (baselines.py).
A model that has learned folds beats the helix on TM-score, lDDT-Cα, Q3 and long-range contacts
in every bin; one that has not is level with it (README: the unseen proteins).
"""

from __future__ import annotations

import numpy as np

from .baselines import ideal_helix
from .scoring import score_prediction

BIN_EDGES = (100, 150, 200)  # bins: < 100, 100-149, 150-199, >= 200 residues
# (header, key): per protein, the mean over its samples; the helix has one "sample".
SUMMARY_SCORES = (("TM-score", "tm_score"), ("lDDT-Cα", "lddt"), ("Q3", "q3"),
                  ("top-L/5 long-range contact precision", "long_range_precision"),
                  ("CA-RMSD (Å)", "ca_rmsd"), ("Rg / native Rg", "rg_ratio"))


def helix_scores(native_ca, native_residue_index=None) -> dict:
    """The scores of an ideal α-helix of the native's length against it (CA atoms only)."""
    helix_ca = ideal_helix(len(native_ca))[1]
    return score_prediction(helix_ca, native_ca, native_residue_index=native_residue_index)


def bin_label(length: int, edges=BIN_EDGES) -> str:
    if length < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges[:-1], edges[1:]):
        if length < high:
            return f"{low}-{high - 1}"
    return f">={edges[-1]}"


def _mean_median(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not v.size:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.median(v)), int(v.size)


def bin_summary(entries: list[dict], edges=BIN_EDGES) -> list[dict]:
    """One row per non-empty length bin, then 'all': proteins, and for each score the model's
    and the helix's mean, median and count of proteins with a finite value (long-range
    precision is NaN for a native without long-range contacts)."""
    labels = [bin_label(e["residues"], edges) for e in entries]
    order = [bin_label(n, edges) for n in (0, *edges)]
    rows = []
    for label in [b for b in order if b in labels] + ["all"]:
        members = [e for e, b in zip(entries, labels) if label in (b, "all")]
        row = {"bin": label, "proteins": len(members)}
        for _, key in SUMMARY_SCORES:
            row[key] = _mean_median(e.get(f"{key}_mean") for e in members)
            row[f"helix_{key}"] = _mean_median(e.get("helix", {}).get(key) for e in members)
        rows.append(row)
    return rows


def bin_table(rows: list[dict]) -> str:
    """Markdown: each cell 'mean / median' of the model, then of the helix."""
    header = ["length bin", "proteins"]
    for title, _ in SUMMARY_SCORES:
        header += [f"{title} model", f"{title} helix"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row["bin"], str(row["proteins"])]
        for _, key in SUMMARY_SCORES:
            digits = 2 if key == "ca_rmsd" else 3
            for k in (key, f"helix_{key}"):
                mean, median, count = row[k]
                cell = "–" if not count else f"{mean:.{digits}f} / {median:.{digits}f}"
                if count and count < row["proteins"]:
                    cell += f" (n={count})"
                cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
