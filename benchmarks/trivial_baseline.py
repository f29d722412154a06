"""Score an ideal α-helix of each native's length against the native: the floor a model must
beat on proteins it never trained on (docs/accuracy.md).

    python benchmarks/trivial_baseline.py --data-dir ../shared/data/pdb_extra --out runs/baseline

Writes baseline.md (the table, in the columns of `python -m nanoaf2_jax.evaluate`) and
baseline.json to --out, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoaf2_jax.data.structures import load_dataset  # noqa: E402
from nanoaf2_jax.evaluation.baselines import ideal_helix  # noqa: E402
from nanoaf2_jax.evaluation.scoring import score_prediction  # noqa: E402

KEYS = [("CA-RMSD (Å)", "ca_rmsd", 2), ("TM-score", "tm_score", 3), ("lDDT", "lddt", 3),
        ("N-CA-C RMSD (Å)", "backbone_rmsd", 2)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="directory of native PDB/mmCIF files")
    parser.add_argument("--out", default="runs/baseline", help="output directory")
    parser.add_argument("--max-length", type=int, default=200)
    args = parser.parse_args(argv)
    rows = []
    for p in load_dataset(args.data_dir, max_length=args.max_length):
        n, ca, c = ideal_helix(p.length)
        native = (p.coords_N, p.coords_CA, p.coords_C)
        rows.append({"protein": p.name, "residues": p.length,
                     **score_prediction(ca, p.coords_CA, (n, ca, c), native)})
    header = ["protein", "residues"] + [h for h, _, _ in KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for r in rows + [{"protein": "**mean**", "residues": float(np.mean([r["residues"] for r in rows])),
                      **{k: float(np.mean([r[k] for r in rows])) for _, k, _ in KEYS}}]:
        cells = [r["protein"], f"{r['residues']:.1f}" if isinstance(r["residues"], float) else str(r["residues"])]
        lines.append("| " + " | ".join(cells + [f"{r[k]:.{d}f}" for _, k, d in KEYS]) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = "\n".join(lines)
    (out / "baseline.md").write_text("# Ideal α-helix baseline\n\n" + table + "\n")
    (out / "baseline.json").write_text(json.dumps(rows, indent=1, default=float))
    print(table)


if __name__ == "__main__":
    main()
