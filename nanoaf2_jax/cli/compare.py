"""The comparison command (`python -m nanoaf2_jax.compare`): its arguments, and the order in
which it runs the number check (reference/compare.py) and the timing
(reference/compare_timing.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from ..reference.compare import SMALL_CONFIG, compare_numbers
from ..reference.compare_timing import run_timing
from ..reference.torch_reference import Unavailable, import_torch, load_reference

EXIT_UNAVAILABLE = 2


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nanoaf2_jax.compare",
        description="Check this port against the PyTorch reference (loss, gradients, sampling on the "
        "same draws) and time both in one process. Needs torch and the reference's alphafold2/ folder.",
    )
    p.add_argument("--reference-dir", required=True, help="the reference's alphafold2/ folder (holding model.py)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 200], help="padded lengths of the timed train steps")
    p.add_argument("--sample-lengths", type=int, nargs="+", default=None,
                   help="lengths of the timed sampling runs (default: the smallest of --lengths)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--small", action="store_true", help="a small model config instead of the default one")
    p.add_argument("--num-steps", type=int, default=100, help="reverse diffusion steps of a sampling run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: every core this process may use)")
    p.add_argument("--data-dir", default=None, help="time the epoch on these structure files instead of synthetic ones")
    p.add_argument("--x64", action="store_true", help="compare numbers in float64 (jax_enable_x64, torch double)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-numbers", action="store_true", help="timing only")
    p.add_argument("--skip-timing", action="store_true", help="numbers only")
    p.add_argument("--skip-sampling", action="store_true", help="no sampling timings")
    p.add_argument("--skip-epoch", action="store_true", help="no epoch comparison")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        torch = import_torch()
        ref_module = load_reference(args.reference_dir)
    except Unavailable as err:
        print(f"compare: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE

    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from ..model.precision import set_matmul_precision

    set_matmul_precision("highest")  # full float32 products, as torch computes them
    from ..model.model_config import ModelConfig

    config = ModelConfig(**SMALL_CONFIG) if args.small else ModelConfig()
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    device = jax.devices()[0]
    print(f"reference: {Path(args.reference_dir).resolve() / 'model.py'} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); "
          f"{available_cores()} cores; config {'small' if args.small else 'default'}: {config.to_dict()}")
    results = {"config": config.to_dict(), "torch_threads": torch.get_num_threads(), "cores": available_cores(),
               "jax_version": jax.__version__, "torch_version": torch.__version__, "backend": device.platform}
    ok = True
    if not args.skip_numbers:
        old_dtype = torch.get_default_dtype()
        if args.x64:
            torch.set_default_dtype(torch.float64)
        try:
            diffs = compare_numbers(ref_module, config, num_steps=args.num_steps, seed=args.seed, x64=args.x64)
        finally:
            torch.set_default_dtype(old_dtype)
        ok = all(d.ok for d in diffs)
        results["numbers"] = [dataclasses.asdict(d) | {"ok": d.ok} for d in diffs]
    if not args.skip_timing:
        if args.x64:
            print("timing skipped under --x64 (it compares float32 speed)")
        else:
            sample_lengths = [] if args.skip_sampling else (args.sample_lengths or [min(args.lengths)])
            results["timing"] = run_timing(
                ref_module, config, lengths=args.lengths, repeats=args.repeats, num_steps=args.num_steps,
                threads=threads, epoch=not args.skip_epoch, data_dir=args.data_dir,
                sample_lengths=sample_lengths, seed=args.seed,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if not ok:
        print("compare: some differences exceed the tolerance (MISMATCH above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
