"""The evaluation command (`python -m nanoaf2_jax.evaluate`): its arguments; the evaluation
they drive is evaluation/evaluate.py."""

from __future__ import annotations

import argparse

from ..evaluation.evaluate import run
from ..model.precision import set_matmul_precision
from .compilation_cache import enable_compilation_cache
from .options import add_model_arguments, cli_errors, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanoaf2_jax.evaluate",
        description=(
            "Predict every protein in a directory of PDB/mmCIF files from its own sequence\n"
            "(first chain with a backbone) and score the samples against the native chain:\n"
            "CA-RMSD after Kabsch superposition, TM-score normalised by the native length,\n"
            "CA lDDT, Q3 (P-SEA states) and the precision of the top L/5 long-range contacts;\n"
            "over the whole backbone, the N-CA-C RMSD, the mean rotation error of the\n"
            "residue frames and the fraction of C(i)-N(i+1) bonds within 0.1 Å of 1.33 Å (best\n"
            "and mean over samples); and mean pLDDT.\n\n"
            "Writes to --out: evaluation.md (the table), evaluation.json (all samples' scores),\n"
            "{protein}.png and {protein}_sample{k}.pdb for the best sample by TM-score, and\n"
            "calibration.png (pLDDT against the samples' lDDT-Cα, per residue and per protein)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="directory of structure files (.pdb .ent .cif .mmcif, optionally .gz)")
    parser.add_argument("--min-length", type=positive_int, default=1, metavar="L",
                        help="skip proteins shorter than this (default: %(default)s)")
    parser.add_argument("--max-length", type=positive_int, default=None, metavar="L",
                        help="skip proteins longer than this (default: no limit)")
    add_model_arguments(parser)
    parser.add_argument("--exact-lengths", action="store_true",
                        help="sample each protein at its own length (one compilation per length) "
                             "instead of padded to its length bucket under a residue mask (one "
                             "per bucket; the same structures up to float rounding)")
    parser.add_argument("--out", default="evaluation", metavar="DIR",
                        help="output directory (default: %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache(args.compilation_cache)
    set_matmul_precision(args.matmul_precision)
    with cli_errors():
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
