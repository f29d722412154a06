"""How long `python -m nanoaf2_jax.evaluate` takes on a set of chains, without running it whole:
per length bucket, one compilation of the sampler and one sampling run (num_samples × steps) of a
protein of that bucket's length, plus the scoring of a protein of that length (TM-score search,
lDDT, Q3, contacts, the helix baseline); then the total for the lengths of --data-dir (or
--lengths), one compilation per bucket used.

    python benchmarks/bench_eval.py --preset default --data-dir ../shared/data/chains/val
    python benchmarks/bench_eval.py --preset tiny --lengths 60 120 180

Random weights (the time does not depend on them). Prints one line per bucket and the estimate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanoaf2_jax.data.structures import load_dataset  # noqa: E402
from nanoaf2_jax.evaluation.baselines import backbone_from_torsions  # noqa: E402
from nanoaf2_jax.evaluation.length_bins import helix_scores  # noqa: E402
from nanoaf2_jax.evaluation.scoring import score_prediction  # noqa: E402
from nanoaf2_jax.inference.predict import bucket_length, predict_codes  # noqa: E402
from nanoaf2_jax.model.convert import template_params  # noqa: E402
from nanoaf2_jax.model.model_config import model_preset  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="structure files whose lengths to estimate for")
    source.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--num-samples", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    lengths = args.lengths or [p.length for p in load_dataset(args.data_dir)]
    config = model_preset(args.preset)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: (0.05 * rng.standard_normal(x.shape)).astype(np.float32),
                                    template_params(config))
    buckets = sorted({bucket_length(n) for n in lengths})
    print(f"{len(lengths)} chains, {min(lengths)}-{max(lengths)} residues; {len(buckets)} buckets: {buckets}; "
          f"preset {args.preset}, {args.num_samples} samples x {args.steps} steps; {jax.devices()[0].platform}")
    total = 0.0
    for edge in buckets:
        n = max(k for k in lengths if bucket_length(k) == edge)  # the bucket's longest chain
        codes = rng.integers(0, 20, n)
        start = time.perf_counter()
        predict_codes(params, config, codes, (0, 0), args.num_samples, args.steps, pad_to=edge)
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = predict_codes(params, config, codes, (0, 1), args.num_samples, args.steps, pad_to=edge)
        sampling = time.perf_counter() - start
        # Score against an extended strand: the time is the TM-score search's, whatever the shape.
        native = backbone_from_torsions(n, -120.0, 130.0)
        start = time.perf_counter()
        for k in range(args.num_samples):
            score_prediction(out["coords_CA"][k], native[1], (out["coords_N"][k], out["coords_CA"][k], out["coords_C"][k]), native)
        helix_scores(native[1])
        scoring = time.perf_counter() - start
        count = sum(1 for k in lengths if bucket_length(k) == edge)
        cost = (first - sampling) + count * (sampling + scoring)
        total += cost
        print(f"bucket {edge:4d} (L={n}): compile {first - sampling:6.1f} s, sampling {sampling:6.1f} s, "
              f"scoring {scoring:5.1f} s; {count:3d} chains -> {cost / 60:5.1f} min")
    print(f"estimated evaluation: {total / 60:.1f} min for {len(lengths)} chains "
          f"(structure files, plots and the identity search not counted: ~0.1 s a chain)")


if __name__ == "__main__":
    main()
