"""`python -m nanoaf2_jax.fit_identity_prior`: fit a checkpoint's identity prior
(inference/identity_prior.py) from its evaluations, and write it beside its training sequences."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.sequence_identity import SequenceSet
from ..inference.identity_prior import PRIOR_FILE, fit_prior, prior_identity, save_prior
from ..inference.output import log
from ..training.training_sequences import SEQUENCES_FILE, read_sequences, run_file_of
from .options import cli_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanoaf2_jax.fit_identity_prior",
        description=(
            "Fit how well a checkpoint's samples really score (mean lDDT-Cα per protein) against\n"
            "each protein's identity to the nearest training sequence (identical residues over\n"
            "the longer of the two), from evaluation.json files\n"
            "of `python -m nanoaf2_jax.evaluate` on that checkpoint, as a non-decreasing\n"
            "(isotonic) curve. sample.py and evaluate then cap each sample's mean pLDDT at it.\n"
            "Fit it on proteins you will not judge the confidence on (e.g. the training proteins,\n"
            "chains/val and training-set homologs), and judge it on others (e.g. pdb_extra)."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluations", nargs="+", metavar="EVAL",
                        help="evaluate output directories or their evaluation.json files, all of "
                             "one checkpoint")
    parser.add_argument("--out", metavar="FILE",
                        help=f"where to write the prior (default: {PRIOR_FILE} in the checkpoint's "
                             f"run directory, beside its {SEQUENCES_FILE}, which it needs; the "
                             f"evaluations' checkpoint path is read from the current directory)")
    return parser


def read_evaluations(paths) -> tuple[list[dict], str]:
    """(every protein evaluated, the one checkpoint they were evaluated with)."""
    proteins, checkpoints = [], set()
    for path in map(Path, paths):
        file = path / "evaluation.json" if path.is_dir() else path
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            for p in data["proteins"]:
                proteins.append({"file": str(file), "protein": str(p["protein"]),
                                 "sequence": str(p["sequence"]),
                                 "lddt": float(p["mean_residue_lddt"]) / 100.0})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{file}: not an evaluation.json of this version ({err!r})") from None
        checkpoints.add(str(data.get("checkpoint")))
    if len(checkpoints) != 1:
        raise ValueError(f"the evaluations are of different checkpoints: {sorted(checkpoints)}")
    return proteins, checkpoints.pop()


def run(args) -> Path:
    proteins, checkpoint = read_evaluations(args.evaluations)
    sequences = run_file_of(checkpoint, SEQUENCES_FILE)
    if sequences is None:
        raise ValueError(f"{checkpoint} (the evaluations' checkpoint) has no {SEQUENCES_FILE}: "
                         f"no training set to measure identity against")
    names, seqs = read_sequences(sequences)
    training_set = SequenceSet(names, seqs)
    identities = [prior_identity(training_set, p["sequence"]) for p in proteins]
    out = Path(args.out) if args.out else sequences.with_name(PRIOR_FILE)
    prior = fit_prior(identities, [p["lddt"] for p in proteins], {
        "checkpoint": checkpoint, "evaluations": [str(p) for p in args.evaluations],
        "proteins": len(proteins), "names": [p["protein"] for p in proteins]})
    save_prior(prior, out)
    log(f"fitted on {len(proteins)} proteins; expected lDDT-Cα by identity over the longer "
        "sequence: " + ", ".join(f"{x:.0%} -> {y:.2f}" for x, y in zip(prior.identity, prior.expected_lddt)))
    log(f"wrote {out}")
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with cli_errors():
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
