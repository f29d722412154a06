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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runs from a plain checkout, without installing the package
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from nanoaf2_jax.model import pairformer  # noqa: E402
from nanoaf2_jax.model.model_config import ModelConfig  # noqa: E402
from nanoaf2_jax.model.alphafold2 import AlphaFold2, count_parameters, init_params  # noqa: E402
from nanoaf2_jax.model.precision import add_matmul_precision_argument, set_matmul_precision  # noqa: E402
from nanoaf2_jax.inference.sampling import NUM_SAMPLE_STEPS, draw_sample_noise, sample_jit  # noqa: E402
from nanoaf2_jax.training.train_step import OptimConfig, draw_train_noise, make_optimizer, make_train_step  # noqa: E402

DEFAULT_LENGTHS = (32, 64, 128, 200, 256)
QUICK_LENGTHS = (32, 64)
GEMM_SIZE = 2048


# ---------------------------------------------------------------------------------------------
# Machine and memory
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def total_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' (+ uncommitted changes)' if dirty else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_description() -> dict:
    import flax
    import jaxlib

    device = jax.devices()[0]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": round(total_memory_gib() or 0.0, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "device": f"{device.platform}: {device.device_kind}",
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "x64": bool(jax.config.jax_enable_x64),
    }


class PeakMemory:
    """Peak memory during a `with` block: device peak on accelerators, process RSS on CPU."""

    def __init__(self):
        self.device = jax.devices()[0]
        self.on_cpu = self.device.platform == "cpu"

    @staticmethod
    def _read_hwm() -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    def __enter__(self):
        if self.on_cpu:
            self.resettable = self._reset_hwm()
        return self

    def __exit__(self, *exc):
        if self.on_cpu:
            hwm = self._read_hwm() if self.resettable else None
            if hwm is not None:
                self.bytes, self.kind = hwm, "peak RSS (VmHWM)"
            else:
                self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                self.kind = "lifetime peak RSS (getrusage)"
        else:
            stats = self.device.memory_stats() or {}
            self.bytes = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
            self.kind = f"{self.device.platform} peak_bytes_in_use (since process start)"
        return False


def memory_analysis(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if m is None:
        return {}
    return {k: int(getattr(m, f"{k}_size_in_bytes", 0)) for k in ("temp", "argument", "output", "generated_code")}


def xla_flops(stage) -> float | None:
    """cost_analysis()['flops'] of a jax Lowered or Compiled stage, None where unavailable."""
    try:
        cost = stage.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def block(x):
    return jax.block_until_ready(x)


def time_calls(call, repeats: int) -> dict:
    """One untimed warm-up call, then `repeats` timed calls: median, min, all (seconds)."""
    block(call())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(call())
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def compile_timed(jitted, *args, **kwargs):
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - start


def gemm_peak(repeats: int, n: int = GEMM_SIZE) -> dict:
    """Measured float32 matmul throughput: an n x n x n jnp.dot, median of repeats."""
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    compiled, _ = compile_timed(matmul, a, b)
    t = time_calls(lambda: compiled(a, b), max(repeats, 5))
    flops = 2.0 * n**3
    return {"size": n, "flops": flops, "median_s": t["median_s"], "min_s": t["min_s"],
            "flops_per_s": flops / t["median_s"], "best_flops_per_s": flops / t["min_s"]}


def synthetic_batch(length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((1, length, 3))
    ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True), axis=1)
    return {
        "sequence": jnp.asarray(rng.integers(0, 20, (1, length)), jnp.int32),
        "mask": jnp.ones((1, length), bool),
        "coords_N": jnp.asarray(ca + rng.normal(0, 1.0, ca.shape), jnp.float32),
        "coords_CA": jnp.asarray(ca, jnp.float32),
        "coords_C": jnp.asarray(ca + rng.normal(0, 1.0, ca.shape), jnp.float32),
    }


def bench_train_step(config, length, repeats, attention_mask) -> dict:
    params = init_params(config, jax.random.PRNGKey(0))
    optimizer = make_optimizer(OptimConfig())
    opt_state = optimizer.init(params)
    batch = synthetic_batch(length)
    noise = draw_train_noise(jax.random.PRNGKey(1), 1, length)
    step = make_train_step(config, optimizer, attention_mask=attention_mask)  # donates params, opt_state
    compiled, compile_s = compile_timed(step, params, opt_state, batch, noise)
    state = {"params": params, "opt_state": opt_state}

    def call():
        state["params"], state["opt_state"], metrics = compiled(state["params"], state["opt_state"], batch, noise)
        return metrics

    with PeakMemory() as mem:
        t = time_calls(call, repeats)
    # XLA counts a loop body once, and the triangular attention runs as a loop over row chunks:
    # the FLOPs per step are therefore counted on the same step lowered with one chunk (not
    # compiled; same operations, no loop to undercount). The compiled program's own count is
    # kept as compiled_program_flops.
    saved = pairformer.ROW_CHUNK_BYTES
    pairformer.ROW_CHUNK_BYTES = 2**62
    try:
        unchunked = make_train_step(config, optimizer, attention_mask=attention_mask, donate=False)
        flops = xla_flops(unchunked.lower(params_shape(config), opt_state_shape(optimizer, config), batch, noise))
    finally:
        pairformer.ROW_CHUNK_BYTES = saved
    return {"compile_s": compile_s, **t, "flops": flops, "compiled_program_flops": xla_flops(compiled),
            "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind, "xla_memory": memory_analysis(compiled)}


def params_shape(config):
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def opt_state_shape(optimizer, config):
    return jax.eval_shape(optimizer.init, params_shape(config))


def bench_trunk(config, length, repeats) -> dict:
    params = init_params(config, jax.random.PRNGKey(0))
    model = AlphaFold2(config)
    seq = jnp.asarray(np.random.default_rng(0).integers(0, 20, (1, length)), jnp.int32)
    residue_index = jnp.arange(length)[None]
    trunk = jax.jit(lambda p, s, r: model.apply({"params": p}, s, r, method=AlphaFold2.trunk))
    compiled, compile_s = compile_timed(trunk, params, seq, residue_index)
    with PeakMemory() as mem:
        t = time_calls(lambda: compiled(params, seq, residue_index), repeats)
    return {"compile_s": compile_s, **t, "flops": xla_flops(compiled), "peak_memory_bytes": mem.bytes,
            "peak_memory_kind": mem.kind, "xla_memory": memory_analysis(compiled)}


def bench_sampling(config, length, num_samples, num_steps, repeats) -> dict:
    params = init_params(config, jax.random.PRNGKey(0))
    seq = jnp.asarray(np.random.default_rng(0).integers(0, 20, length), jnp.int32)
    noise = draw_sample_noise(jax.random.PRNGKey(2), num_samples, length, num_steps)
    compiled, compile_s = compile_timed(sample_jit, params, seq, noise, config)
    with PeakMemory() as mem:
        t = time_calls(lambda: compiled(params, seq, noise), repeats)
    # (XLA's cost analysis counts a loop body once, so no FLOPs are reported for sampling.)
    return {"compile_s": compile_s, **t, "samples": num_samples, "steps": num_steps,
            "peak_memory_bytes": mem.bytes, "peak_memory_kind": mem.kind, "xla_memory": memory_analysis(compiled)}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _mib(b):
    return "–" if b is None else f"{b / 2**20:,.0f}"


def _s(x):
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    peak = result["gemm"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; backend {m['backend']} ({m['device']}); "
        f"jax {m['jax']}, jaxlib {m['jaxlib']}, flax {m['flax']}; XLA_FLAGS={m['xla_flags'] or '(none)'}"
        + (f"; GLIBC_TUNABLES={m['glibc_tunables']}" if m["glibc_tunables"] else ""),
        f"Date {m['date']}, commit {m['commit'] or 'unknown'}. Model: default config, "
        f"{result['parameters']:,} parameters; attention mask {'on' if result['attention_mask'] else 'off'}; "
        f"median of {result['repeats']} runs after one warm-up.",
        f"Measured float32 matmul peak ({peak['size']}³ jnp.dot): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"(median; best {peak['best_flops_per_s'] / 1e9:.1f}).",
        "",
        "| L | train step (s) | compile (s) | XLA GFLOP/step | GFLOP/s | % of matmul peak | peak RSS / device (MiB) | XLA temp (MiB) "
        f"| trunk (s) | trunk compile (s) | sample ×1, {result['num_steps']} steps (s) | sample ×8 (s) "
        "| ×8 time per sample / ×1 time | sampling compile ×1/×8 (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for L, r in result["lengths"].items():
        tr, tk = r["train_step"], r.get("trunk", {})
        s1, s8 = r.get("sample_1", {}), r.get("sample_8", {})
        flops = tr.get("flops")
        rate = flops / tr["median_s"] if flops else None
        frac = f"{100 * rate / peak['flops_per_s']:.0f}%" if rate else "–"
        per = (f"{s8['median_s'] / 8 / s1['median_s']:.2f}" if s1 and s8 else "–")
        lines.append(
            f"| {L} | {_s(tr['median_s'])} | {_s(tr['compile_s'])} | {flops / 1e9 if flops else float('nan'):.1f} | "
            f"{rate / 1e9 if rate else float('nan'):.1f} | {frac} | {_mib(tr['peak_memory_bytes'])} | "
            f"{_mib(tr['xla_memory'].get('temp'))} | {_s(tk.get('median_s'))} | {_s(tk.get('compile_s'))} | "
            f"{_s(s1.get('median_s'))} | {_s(s8.get('median_s'))} | {per} | "
            f"{_s(s1.get('compile_s'))}/{_s(s8.get('compile_s'))} |"
        )
    lines += [
        "",
        "GFLOP/step: XLA's count (cost_analysis()['flops']) for the train step lowered with the triangular "
        "attention as one chunk, so that no loop body is counted once only; it includes the attention "
        "recomputation of our backward pass. "
        "Peak memory: " + next(iter(result["lengths"].values()))["train_step"]["peak_memory_kind"] + " during the "
        "train-step measurement. XLA temp: the train step's temporary buffers (compiled.memory_analysis()).",
    ]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    add_matmul_precision_argument(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    repeats = args.repeats or (2 if args.quick else 5)
    set_matmul_precision(args.matmul_precision)
    config = ModelConfig()
    machine = machine_description()
    print(f"{machine['cpu']}, {machine['cores']} cores; jax {machine['jax']} on {machine['device']}; "
          f"commit {machine['commit']}", flush=True)
    peak = gemm_peak(repeats)
    print(f"float32 matmul peak ({GEMM_SIZE}^3): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    result = {"machine": machine, "config": config.to_dict(), "parameters": count_parameters(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))), "repeats": repeats,
        "attention_mask": args.attention_mask, "matmul_precision": args.matmul_precision, "num_steps": args.num_steps, "gemm": peak, "lengths": {}}
    for L in lengths:
        r = {}
        r["train_step"] = bench_train_step(config, L, repeats, args.attention_mask)
        tr = r["train_step"]
        rate = tr["flops"] / tr["median_s"] if tr["flops"] else None
        print(f"L={L}: train step {tr['median_s']:.3f} s (compile {tr['compile_s']:.1f} s, "
              f"{(tr['flops'] or 0) / 1e9:.1f} GFLOP, "
              f"{'%.0f%% of matmul peak' % (100 * rate / peak['flops_per_s']) if rate else 'no FLOP count'}, "
              f"peak memory {_mib(tr['peak_memory_bytes'])} MiB)", flush=True)
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
