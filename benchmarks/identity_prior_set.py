"""The proteins an identity prior (nanoaf2_jax/inference/identity_prior.py) is fitted on, as a
directory of links for `python -m nanoaf2_jax.evaluate`: the run's own training structures, every
chain of a chains/train directory at least --min-identity identical (over its own length) to one of
the run's training sequences (homologs, fragments and complexes of them, so that the fit sees
identities between unseen and trained), and every --val-every-th chain of chains/val (unseen).

    python benchmarks/identity_prior_set.py --checkpoint outputs/default \
        --train-dir ../shared/data/pdb --chains ../shared/data/chains --out prior_set

For the default model this gave 8 + 47 + 25 = 80 proteins (docs/generalisation.md). The set must
not hold the proteins the prior is then judged on (e.g. pdb_extra).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanoaf2_jax.data.structures import STRUCTURE_SUFFIXES  # noqa: E402
from nanoaf2_jax.training.training_sequences import training_set_of  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the run (with training_sequences.fasta)")
    parser.add_argument("--train-dir", required=True, help="the run's training structures")
    parser.add_argument("--chains", required=True, help="a chains directory: index.tsv, train/, val/")
    parser.add_argument("--out", required=True, help="directory of links to write (must not exist)")
    parser.add_argument("--min-identity", type=float, default=0.3)
    parser.add_argument("--val-every", type=int, default=6)
    args = parser.parse_args(argv)
    training_set = training_set_of(args.checkpoint)
    if training_set is None:
        parser.error(f"{args.checkpoint} has no training_sequences.fasta")
    chains = Path(args.chains)
    out = Path(args.out)
    out.mkdir(parents=True)
    links = [p for p in sorted(Path(args.train_dir).iterdir()) if p.name.endswith(STRUCTURE_SUFFIXES)]
    with open(chains / "index.tsv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["split"] == "train"]
    for i, row in enumerate(rows):
        if training_set.nearest(row["sequence"])[0] >= args.min_identity:
            links.append(chains / row["file"])
        if i % 500 == 0:
            print(f"{i}/{len(rows)} training chains searched", file=sys.stderr)
    links += sorted((chains / "val").iterdir())[::args.val_every]
    for path in links:
        (out / path.name).symlink_to(path.resolve())
    print(f"{len(links)} links in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
