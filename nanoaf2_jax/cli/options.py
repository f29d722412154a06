"""Command-line pieces shared by sample.py and python -m nanoaf2_jax.evaluate: checked number
types, the model and sampling options, and how expected errors end a command."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

from ..inference.identity_prior import add_identity_prior_argument
from ..inference.sampling import NUM_SAMPLE_STEPS
from ..model.precision import add_matmul_precision_argument
from .compilation_cache import add_compilation_cache_argument

MAX_SEED = 2**32 - 1


def checked_number(kind, accept, requirement):
    """An argparse type: parse with `kind`, then require `accept(value)` (else say `requirement`)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} {requirement}")
        return value

    return parse


positive_int = checked_number(int, lambda v: v >= 1, "must be at least 1")
seed_int = checked_number(int, lambda v: 0 <= v <= MAX_SEED, f"is outside 0..{MAX_SEED}")
positive_float = checked_number(float, lambda v: v > 0 and math.isfinite(v), "must be a positive number")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by sample.py and the evaluation command."""
    add_matmul_precision_argument(parser)
    add_compilation_cache_argument(parser)
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH",
        help="trained weights: an orbax run directory (its latest checkpoint is used), one "
             "checkpoint step directory, or a reference PyTorch state_dict (.pt/.pth) or its "
             ".npz conversion. Orbax checkpoints carry their model config; a bare state_dict "
             "takes it from --preset")
    parser.add_argument(
        "--preset", metavar="NAME",
        help="model preset (reference, default, tiny; see configs.py) giving the architecture "
             "of a bare state_dict checkpoint")
    parser.add_argument("--num-samples", type=positive_int, default=1, metavar="N",
                        help="structures to sample per sequence, all in one compiled call "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="random seed; the same seed, inputs and options give the same "
                             "structures (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=NUM_SAMPLE_STEPS,
                        help="reverse-diffusion steps (default: %(default)s, as the reference)")
    parser.add_argument(
        "--eta", type=checked_number(float, lambda v: 0 <= v <= 1, "must be in [0, 1]"),
        metavar="X",
        help="translation reverse step DDIM(η) with the correct posterior noise: 0 is "
             "deterministic, 1 is DDPM's ancestral sampler (default: the checkpoint's "
             "sampling_eta; the reference preset's step adds no real noise)")
    parser.add_argument("--format", choices=("pdb", "cif"), default="pdb",
                        help="structure file format: pdb, or cif for ModelCIF (mmCIF with pLDDT as "
                        "per-residue and global quality metrics, as AlphaFold writes) "
                        "(default: %(default)s)")
    parser.add_argument(
        "--max-memory-gb", type=positive_float, metavar="GB",
        help="refuse sequences whose estimated peak memory (see nanoaf2_jax/inference/memory.py) "
             "exceeds this; default: the memory available now (accelerator memory, or "
             "MemAvailable)")
    parser.add_argument("--force", action="store_true",
                        help="sample even when the memory estimate exceeds the limit")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out that already holds predictions, replacing "
                             "files of the same name (without it such an --out is refused)")
    add_identity_prior_argument(parser)


@contextlib.contextmanager
def cli_errors():
    """Expected failures become one 'error: ...' line and exit status 1 (set NANOAF2_DEBUG=1
    for the traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError, ImportError) as err:
        if os.environ.get("NANOAF2_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
