"""Speed and memory of the port: one train step, the Pairformer trunk and 100-step sampling.

    python benchmarks/bench.py [--lengths 32 64 128 200 256] [--repeats 5] [--out benchmarks/results]
    python benchmarks/bench.py --quick          # lengths 32 64, 2 repeats: a minute or two

For the default model config (ModelConfig()) and each length L it measures, on the default JAX
backend:

- one jitted train step (batch 1, forward + backward + clipping + AdamW, parameters donated),
- the Pairformer trunk alone (input embedding and all blocks, forward),
- a full sampling run (100 reverse steps, one trunk pass) with 1 and with 8 samples,

each as compile time (lower + compile) and steady-state time (median of --repeats timed calls
after one untimed warm-up call, every call ended by block_until_ready). Alongside:

- peak memory: on CPU the peak resident set size of this process during each measurement
  (/proc/self/status VmHWM, reset before each one through /proc/self/clear_refs where the kernel
  allows it, else the lifetime peak from getrusage); on a GPU the device's peak_bytes_in_use
  from device.memory_stats(); and for every compiled program XLA's own buffer sizes
  (compiled.memory_analysis(): temporaries, arguments, outputs);
- FLOPs per train step as XLA counts them (cost_analysis()['flops']: 2 per multiply-add of a
  matrix product plus elementwise work), the achieved FLOP/s, and that as a fraction of the
  machine's measured matmul peak (a float32 2048x2048x2048 jnp matmul, timed in the same run).
  XLA counts a loop body once, and our triangular attention loops over chunks of rows, so the
  count is taken on the same step lowered with a single chunk (the compiled program's own,
  lower, count is in the JSON as compiled_program_flops).

Results go to OUT/bench-<timestamp>.json and .md (and bench-latest.*), with the machine
(CPU model, cores, memory, jax/jaxlib/flax versions, backend, device, XLA_FLAGS).

The measurements are in bench_timing.py, the machine and memory probes in bench_machine.py, the
table in bench_report.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Runs from a plain checkout, without installing the package; the bench_* modules sit beside it.
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import jax  # noqa: E402

from bench_machine import machine_description  # noqa: E402
from bench_report import markdown, mib  # noqa: E402
from bench_timing import GEMM_SIZE, bench_sampling, bench_train_step, bench_trunk, gemm_peak  # noqa: E402
from nanoaf2_jax.inference.sampling import NUM_SAMPLE_STEPS  # noqa: E402
from nanoaf2_jax.model.alphafold2 import count_parameters, init_params  # noqa: E402
from nanoaf2_jax.model.model_config import ModelConfig  # noqa: E402
from nanoaf2_jax.model.precision import add_matmul_precision_argument, set_matmul_precision  # noqa: E402
from nanoaf2_jax.training.mixed_precision import PRECISIONS, compute_dtype_of  # noqa: E402

DEFAULT_LENGTHS = (32, 64, 128, 200, 256)
QUICK_LENGTHS = (32, 64)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help=f"default {' '.join(map(str, DEFAULT_LENGTHS))}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5, --quick 2)")
    p.add_argument("--quick", action="store_true", help=f"lengths {' '.join(map(str, QUICK_LENGTHS))}, 2 repeats")
    p.add_argument("--num-steps", type=int, default=NUM_SAMPLE_STEPS, help="reverse diffusion steps per sampling run")
    p.add_argument("--samples", type=int, nargs="+", default=[1, 8], help="sample counts to time (default 1 8)")
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--skip-trunk", action="store_true")
    p.add_argument("--attention-mask", action="store_true",
                   help="time the train step with padding masked out of attention (our default recipe)")
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=["float32"],
                   help="time the train step in each (train.py --precision); with float32 and bf16, "
                        "the table gains the bf16 step time and its speed-up over float32 "
                        "(trunk and sampling stay float32)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    add_matmul_precision_argument(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    repeats = args.repeats or (2 if args.quick else 5)
    if "float32" not in args.precisions:  # the table and the ratios are relative to float32
        args.precisions = ["float32", *args.precisions]
    set_matmul_precision(args.matmul_precision)
    config = ModelConfig()
    machine = machine_description()
    print(f"{machine['cpu']}, {machine['cores']} cores; jax {machine['jax']} on {machine['device']}; "
          f"commit {machine['commit']}", flush=True)
    peak = gemm_peak(repeats)
    print(f"float32 matmul peak ({GEMM_SIZE}^3): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    result = {"machine": machine, "config": config.to_dict(), "parameters": count_parameters(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))), "repeats": repeats,
        "attention_mask": args.attention_mask, "matmul_precision": args.matmul_precision, "num_steps": args.num_steps, "gemm": peak,
        "precisions": args.precisions, "lengths": {}}
    for L in lengths:
        r = {}
        for precision in args.precisions:
            key = "train_step" if precision == "float32" else f"train_step_{precision}"
            r[key] = bench_train_step(config, L, repeats, args.attention_mask, compute_dtype_of(precision))
            if key != "train_step":
                t = r[key]
                ratio = (f", {r['train_step']['median_s'] / t['median_s']:.2f}x float32"
                         if "train_step" in r else "")
                print(f"L={L}: train step {precision} {t['median_s']:.3f} s (compile {t['compile_s']:.1f} s"
                      f"{ratio})", flush=True)
        if "train_step" not in r:
            continue
        tr = r["train_step"]
        rate = tr["flops"] / tr["median_s"] if tr["flops"] else None
        print(f"L={L}: train step {tr['median_s']:.3f} s (compile {tr['compile_s']:.1f} s, "
              f"{(tr['flops'] or 0) / 1e9:.1f} GFLOP, "
              f"{'%.0f%% of matmul peak' % (100 * rate / peak['flops_per_s']) if rate else 'no FLOP count'}, "
              f"peak memory {mib(tr['peak_memory_bytes'])} MiB)", flush=True)
        if not args.skip_trunk:
            r["trunk"] = bench_trunk(config, L, repeats)
            print(f"L={L}: trunk {r['trunk']['median_s']:.3f} s (compile {r['trunk']['compile_s']:.1f} s)", flush=True)
        if not args.skip_sampling:
            for n in args.samples:
                s = bench_sampling(config, L, n, args.num_steps, repeats)
                r[f"sample_{n}"] = s
                print(f"L={L}: sampling {n} x {args.num_steps} steps {s['median_s']:.3f} s "
                      f"(compile {s['compile_s']:.1f} s)", flush=True)
        result["lengths"][L] = r
        jax.clear_caches()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    md = markdown(result)
    for name in (f"bench-{stamp}", "bench-latest"):
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        (out / f"{name}.md").write_text(md)
    print()
    print(md)
    print(f"wrote {out / f'bench-{stamp}.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
