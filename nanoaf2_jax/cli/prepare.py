"""The preparation command (`python -m nanoaf2_jax.prepare`): its arguments; the preparation
they drive is data/prepare.py, the cache format data/cache.py (docs/data.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..data.cache import CacheError
from ..data.prepare import ParseOptions, prepare


def positive_int(text: str) -> int:
    # Not cli/options.py's: that module imports JAX, which preparing never needs.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nanoaf2_jax.prepare",
        description=(
            "Parse PDB/mmCIF files (.pdb .ent .cif .mmcif, optionally .gz; directories are\n"
            "searched recursively) into a training cache: one record per protein chain\n"
            "(sequence, N/CA/C coordinates, residue numbers, name, chain, source, resolution,\n"
            "method) in ArrayRecord shards, a manifest.json and skipped.tsv (each unusable\n"
            "file and why). Re-running skips files already prepared and is safe to interrupt.\n"
            "Train on it with: python train.py --data-dir CACHE"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SRC",
                        help="structure files or directories of them")
    parser.add_argument("--out", required=True, metavar="CACHE", help="the cache directory")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="parsing processes (default: %(default)s)")
    parser.add_argument("--all-chains", action="store_true",
                        help="one record per protein chain (default: the first protein chain)")
    parser.add_argument("--atom-only", action="store_true",
                        help="the reference's rule: ATOM records only, modified residues such "
                             "as MSE dropped (default: kept, coded by their parent, MSE -> M)")
    parser.add_argument("--min-residues", type=positive_int, default=1, metavar="N",
                        help="do not record chains with fewer usable residues "
                             "(default: %(default)s; training applies its own --min-length)")
    parser.add_argument("--files-per-shard", type=positive_int, default=1000, metavar="N",
                        help="files per shard, and how often progress is saved "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = ParseOptions(modified_residues=not args.atom_only, all_chains=args.all_chains,
                           min_residues=args.min_residues)
    try:
        prepare(args.sources, args.out, workers=args.workers, options=options,
                files_per_shard=args.files_per_shard,
                progress=False if args.no_progress else None)
    except (CacheError, OSError) as err:
        print(f"python -m nanoaf2_jax.prepare: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; what was saved is kept: run the same command again to continue",
              file=sys.stderr)
        return 130
    return 0
