"""The data pipeline's speed: preparation throughput and loader throughput against the train step.

    python benchmarks/bench_data.py                 # 3000 files, train step at L = 64 and 200
    python benchmarks/bench_data.py --quick         # 600 files, train step at L = 64
    python benchmarks/bench_data.py --files 5000 --workers 1 2 4 --out /tmp/bench
    python benchmarks/bench_data.py --tree DIR --lengths   # real files, preparation and loader only

1. Preparation (`python -m nanoaf2_jax.prepare`'s work): a synthetic tree of --files structure
   files (one chain each, 40 to 400 residues, 80% PDB, 20% mmCIF, a few with HETATM MSE) is
   prepared into a fresh cache with each --workers count: files/s, wall clock including the
   worker processes' start-up. --tree DIR times a tree of your own (real files) instead.
2. The loader: Grain batches of the `default` recipe over that cache (batch 1, its length
   buckets, crops of 200, the file's numbering), read in order from a fresh iterator: batches/s,
   and the same batches computed without Grain (batch_at alone, one thread).
3. The train step of the `default` model (attention mask on, batch 1) at each --lengths, timed
   as benchmarks/bench.py times it, so the loader's time per batch can be compared with it:
   the loader must never be the bottleneck.

Results: OUT/data-latest.json and .md (default benchmarks/results/), with the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_machine import machine_description  # noqa: E402
from nanoaf2_jax.data.cache import Cache  # noqa: E402
from nanoaf2_jax.data.loader import CachedBatches  # noqa: E402
from nanoaf2_jax.data.prepare import prepare  # noqa: E402

RESIDUES = ("ALA", "GLY", "LEU", "SER", "LYS", "GLU", "VAL", "THR", "ASP", "ILE", "PHE", "ARG")


def write_tree(root: Path, n: int, seed: int = 0) -> None:
    """n files of one chain each: a helix-like trace, backbone and O atoms, B-factors."""
    import gemmi

    rng = np.random.default_rng(seed)
    for k in range(n):
        length = int(rng.integers(40, 401))
        names = [RESIDUES[j] for j in rng.integers(0, len(RESIDUES), length)]
        het = set(rng.choice(length, 2, replace=False)) if k % 10 == 0 else set()
        i = np.arange(length)[:, None]
        theta = np.deg2rad(100.0) * i
        ca = np.concatenate([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i], 1)
        ca += rng.normal(0, 0.3, ca.shape) + k
        lines, serial = [], 0
        for r in range(length):
            name, record = ("MSE", "HETATM") if r in het else (names[r], "ATOM")
            for atom, shift in (("N", (-0.6, 1.2, -0.4)), ("CA", (0, 0, 0)), ("C", (1.1, 0.7, 0.5)),
                                ("O", (1.6, 1.5, 0.9))):
                serial += 1
                x, y, z = ca[r] + shift
                lines.append(f"{record:<6s}{serial:>5d}  {atom:<3s} {name:>3s} A{r + 1:>4d}    "
                             f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           {atom[0]}")
        directory = root / f"{k % 50:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"S{k:05d}.pdb"
        path.write_text("\n".join(lines + ["TER", "END"]) + "\n")
        if k % 5 == 0:
            gemmi.read_structure(str(path)).make_mmcif_document().write_file(str(path.with_suffix(".cif")))
            path.unlink()


def bench_prepare(tree: Path, work: Path, workers: int) -> dict:
    out = work / f"cache-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    report = prepare([tree], out, workers=workers, progress=False)
    files = report.prepared + report.skipped
    return {"workers": workers, "files": files, "seconds": report.seconds,
            "files_per_s": files / report.seconds, "records": report.records, "cache": str(out)}


def bench_loader(cache_dir: Path, batches: int, worker_count: int = 0) -> dict:
    from nanoaf2_jax.training.train_config import DEFAULT_BUCKETS

    def plan():
        return CachedBatches(Cache(cache_dir), batch_size=1, seed=0, buckets=DEFAULT_BUCKETS,
                             crop_size=200, file_numbering=True, min_length=20,
                             worker_count=worker_count)

    p = plan()
    batches = min(batches, p.steps_per_epoch)
    start = time.perf_counter()
    p.start(batches, 0)
    first = None
    for step in range(batches):
        p.batch(step)
        if first is None:
            first = time.perf_counter() - start
    grain_s = time.perf_counter() - start
    p.close()
    q = plan()
    start = time.perf_counter()
    for step in range(batches):
        q.batch_at(step)
    direct_s = time.perf_counter() - start
    return {"batches": batches, "worker_count": worker_count, "grain_s": grain_s,
            "grain_batches_per_s": batches / grain_s, "first_batch_s": first,
            "direct_ms_per_batch": 1e3 * direct_s / batches}


def bench_step(lengths, repeats: int) -> list[dict]:
    from bench_timing import bench_train_step
    from nanoaf2_jax.model.model_config import MODEL_PRESETS

    out = []
    for length in lengths:
        r = bench_train_step(MODEL_PRESETS["default"], length, repeats, attention_mask=True)
        out.append({"length": length, "step_s": r["median_s"], "compile_s": r["compile_s"]})
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Data pipeline benchmark ({result['date']})", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores; commit "
             f"{m.get('commit')}; load average before: {result['load_average_before']}; "
             f"tree: {result['tree']} ({result['prepare'][0]['files']} files).", "",
             "| preparation workers | files/s | seconds | chains |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['workers']} | {r['files_per_s']:.1f} | {r['seconds']:.1f} | {r['records']} |"
              for r in result["prepare"]]
    lines += ["", "| loader | batches/s | ms per batch |", "| --- | --- | --- |"]
    for r in result["loader"]:
        label = f"Grain, {r['worker_count']} worker processes" if r["worker_count"] else "Grain, threads"
        lines.append(f"| {label} | {r['grain_batches_per_s']:.0f} | {1e3 / r['grain_batches_per_s']:.2f} |")
    r = result["loader"][0]
    lines.append(f"| batch_at alone (no Grain) | {1e3 / r['direct_ms_per_batch']:.0f} | "
                 f"{r['direct_ms_per_batch']:.2f} |")
    if not result["step"]:
        return "\n".join(lines) + "\n"
    lines += ["", "| train step (default model, batch 1) | seconds | loader time / step time |",
              "| --- | --- | --- |"]
    per_batch = 1 / result["loader"][0]["grain_batches_per_s"]
    lines += [f"| L = {s['length']} | {s['step_s']:.3f} | {per_batch / s['step_s']:.4f} |"
              for s in result["step"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--loader-workers", type=int, nargs="*", default=[0],
                        help="Grain worker-process counts to time besides threads (0)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[64, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work-dir", default=None, help="keep the tree and caches here")
    parser.add_argument("--tree", default=None, help="prepare this tree of structure files "
                        "instead of a synthetic one")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.lengths, args.repeats, args.batches = 600, [64], 2, 300
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-data-"))
    tree = Path(args.tree) if args.tree else work / "tree"
    if not tree.is_dir():
        start = time.perf_counter()
        write_tree(tree, args.files)
        print(f"wrote {args.files} files in {time.perf_counter() - start:.1f} s", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"),
              "tree": args.tree or "synthetic", "machine": machine_description(),
              "load_average_before": Path("/proc/loadavg").read_text().split()[:3]
              if Path("/proc/loadavg").exists() else None}
    result["prepare"] = []
    for w in args.workers:
        result["prepare"].append(bench_prepare(tree, work, w))
        print(json.dumps(result["prepare"][-1]), flush=True)
    cache = Path(result["prepare"][0]["cache"])
    result["loader"] = [bench_loader(cache, args.batches, w) for w in args.loader_workers]
    print(json.dumps(result["loader"]), flush=True)
    result["step"] = bench_step(args.lengths, args.repeats) if args.lengths else []
    print(json.dumps(result["step"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data-latest.json").write_text(json.dumps(result, indent=2))
    (out / "data-latest.md").write_text(markdown(result))
    print(markdown(result))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
