"""Side-by-side check and timing of this port against the PyTorch reference, in one process.

    python -m nanoaf2_jax.compare --reference-dir DIR [--lengths 64 200] [--repeats N] [--small]

DIR is the reference's `alphafold2/` folder (the one holding its model.py). Its model.py is
imported from there at run time; none of its code is part of this package. Needs torch
(`pip install 'nanoaf2-jax[torch]'`); without torch or without DIR/model.py the tool says so and
exits with status 2.

What it does:

1. Numbers. Builds the reference AlphaFold2 (default config, or a small one with --small), sets
   every weight to a non-zero random value (also the layers the reference initialises to zero),
   converts its state_dict into our parameters and runs both on the same batch with the same
   noise: the loss and its components, the gradient of every parameter, and a sampled structure
   (100 reverse steps). The reference draws its noise with torch.rand / torch.randn inside its
   forward and predict; for the comparison its module's `torch` is swapped for a thin proxy
   that hands out pre-drawn numbers, and we pass the same numbers as TrainNoise / SampleNoise.
   Prints the largest differences; exit status 1 if any exceeds a loose tolerance.
2. Timing, both in this process: one train step (forward, backward, clipping, AdamW; batch 1)
   at each padded length, and a 100-step sampling run; prints lines like
   `train step L=64: reference 0.50 s, jax 0.21 s, speed-up 2.4x`.
3. One epoch over the reference's 8 training proteins: the reference's recipe (every protein
   padded to 200, batch 1) against our `default` recipe (length buckets, padding masked out of
   attention), and 8 samples in one call against 8 single-sample calls of ours.

torch gets as many threads as this process may use cores (--threads); XLA:CPU uses all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# The eight proteins the reference trains on (1CRN 1UBQ 2GB1 1L2Y 1VII 1ENH 1BDD 1PRB) and
# their lengths, in the order of its train.py's PDB_IDS.
REFERENCE_PROTEIN_LENGTHS = (46, 76, 56, 20, 36, 54, 60, 53)
REFERENCE_PAD_LENGTH = 200  # the reference pads every protein to MAX_SEQ_LEN
SMALL_CONFIG = dict(c_s=32, c_z=16, c_atom=32, num_pairformer_blocks=2, pairformer_heads=4,
                    num_denoise_blocks=2, denoise_heads=4)
EXIT_UNAVAILABLE = 2


class Unavailable(RuntimeError):
    """torch or the reference's model.py is missing."""


# ---------------------------------------------------------------------------------------------
# Loading the reference
# ---------------------------------------------------------------------------------------------


def import_torch():
    try:
        import torch
    except ImportError:
        raise Unavailable(
            "the comparison needs PyTorch: pip install 'nanoaf2-jax[torch]' "
            "(or pip install torch, the CPU build is enough)"
        ) from None
    return torch


def load_reference(reference_dir) -> object:
    """Import DIR/model.py as a fresh module (not added to sys.modules under a common name)."""
    path = Path(reference_dir) / "model.py"
    if not path.is_file():
        raise Unavailable(
            f"{path}: no such file. --reference-dir must be the reference's alphafold2/ folder "
            "(the one with model.py), e.g. a checkout of github.com/sungsoo-ahn/nano-protein-ais"
        )
    import_torch()
    spec = importlib.util.spec_from_file_location("nanoaf2_reference_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "AlphaFold2"):
        raise Unavailable(f"{path} defines no AlphaFold2 class: is this the reference's model.py?")
    return module


class _ScriptedTorch:
    """Stands in for the `torch` module inside the reference's model.py: everything is torch's,
    except that rand / randn / randn_like return the next pre-drawn array (shape-checked)."""

    def __init__(self, torch, draws):
        self._torch = torch
        self._draws = list(draws)
        self.used = 0

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def _next(self, shape, like=None):
        if self.used >= len(self._draws):
            raise RuntimeError(f"the reference drew more random numbers than scripted ({self.used})")
        value = np.asarray(self._draws[self.used])
        self.used += 1
        shape = tuple(int(s) for s in shape)
        if value.shape != shape:
            raise RuntimeError(f"scripted draw {self.used}: reference asked for shape {shape}, have {value.shape}")
        dtype = like.dtype if like is not None else self._torch.get_default_dtype()
        return self._torch.from_numpy(np.ascontiguousarray(value)).to(dtype)

    @staticmethod
    def _shape(args):
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            return tuple(args[0])
        return tuple(args)

    def rand(self, *size, **kwargs):
        return self._next(self._shape(size))

    def randn(self, *size, **kwargs):
        return self._next(self._shape(size))

    def randn_like(self, tensor, **kwargs):
        return self._next(tuple(tensor.shape), like=tensor)


@contextlib.contextmanager
def scripted_draws(ref_module, draws):
    """Within the block, the reference's model.py draws `draws` in order instead of random numbers."""
    torch = import_torch()
    proxy = _ScriptedTorch(torch, draws)
    original = ref_module.torch
    ref_module.torch = proxy
    try:
        yield proxy
    finally:
        ref_module.torch = original
    if proxy.used != len(proxy._draws):
        raise RuntimeError(f"the reference used {proxy.used} of {len(proxy._draws)} scripted draws")


def randomise_weights(ref_model, seed: int = 0):
    """Every parameter set to a non-zero random value of a sensible scale: Linear weights
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (so activations stay O(1)), biases N(0, 0.1²),
    LayerNorm weights 1 + N(0, 0.1²), embeddings N(0, 1); the zero-initialised AdaLN.proj and
    DiffusionModule.output_proj included. Values drawn with numpy, so reproducible anywhere."""
    torch = import_torch()
    rng = np.random.default_rng(seed)
    modules = dict(ref_model.named_modules())
    with torch.no_grad():
        for name, p in ref_model.named_parameters():
            owner = modules[name.rpartition(".")[0]]
            shape = tuple(p.shape)
            if isinstance(owner, torch.nn.LayerNorm):
                value = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
            elif isinstance(owner, torch.nn.Embedding):
                value = rng.standard_normal(shape)
            elif name.endswith("bias"):
                value = 0.1 * rng.standard_normal(shape)
            else:
                bound = 1.0 / math.sqrt(shape[-1])
                value = rng.uniform(-bound, bound, shape)
            value[value == 0] = 1e-3
            p.copy_(torch.from_numpy(value).to(p.dtype))


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def synthetic_protein(length: int, rng) -> dict:
    """A chain-like backbone: CA on a random walk of 3.8 Å steps, N and C near each CA."""
    steps = rng.standard_normal((length, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    ca = np.cumsum(steps, axis=0)
    n = ca + rng.normal(0, 0.8, (length, 3)) + np.array([-1.2, 0.6, 0.0])
    c = ca + rng.normal(0, 0.8, (length, 3)) + np.array([1.3, 0.4, 0.0])
    return {
        "sequence": rng.integers(0, 20, length).astype(np.int64),
        "coords_N": n.astype(np.float32), "coords_CA": ca.astype(np.float32), "coords_C": c.astype(np.float32),
    }


def pad_batch(proteins, length: int, float_dtype=np.float32) -> dict:
    """Stack proteins [B, length], padding with zeros (sequence 0, mask False), as the reference does."""
    B = len(proteins)
    out = {
        "sequence": np.zeros((B, length), np.int64),
        "mask": np.zeros((B, length), bool),
        **{k: np.zeros((B, length, 3), float_dtype) for k in ("coords_N", "coords_CA", "coords_C")},
    }
    for b, p in enumerate(proteins):
        n = len(p["sequence"])
        out["sequence"][b, :n] = p["sequence"]
        out["mask"][b, :n] = True
        for k in ("coords_N", "coords_CA", "coords_C"):
            out[k][b, :n] = p[k]
    return out


def load_proteins(data_dir) -> list[dict]:
    from ..data.structures import load_dataset

    proteins = load_dataset(data_dir, min_length=20, max_length=REFERENCE_PAD_LENGTH)
    return [
        {"sequence": p.sequence.astype(np.int64), "coords_N": p.coords_N, "coords_CA": p.coords_CA,
         "coords_C": p.coords_C, "name": p.name}
        for p in proteins
    ]


def to_torch(batch: dict, dtype=None) -> dict:
    torch = import_torch()
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t
    return out


def to_jax(batch: dict) -> dict:
    import jax.numpy as jnp

    return {k: jnp.asarray(v.astype(np.int32) if k == "sequence" else v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# 1. Numbers
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Difference:
    what: str
    max_abs: float
    scale: float  # max |reference|
    tolerance: float  # relative

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.scale, 1e-30)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs) and self.max_abs <= self.tolerance * max(1.0, self.scale))

    def line(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        return (f"  {self.what:<44} max|diff| {self.max_abs:9.2e}  max|ref| {self.scale:9.2e}  "
                f"relative {self.relative:8.1e}  {status}")


def _difference(what, ours, theirs, tolerance):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return Difference(f"{what} (shapes {ours.shape} vs {theirs.shape})", float("inf"), 0.0, tolerance)
    return Difference(what, float(np.max(np.abs(ours - theirs), initial=0.0)),
                      float(np.max(np.abs(theirs), initial=0.0)), tolerance)


def compare_numbers(ref_module, config, *, lengths=(24, 17), num_steps=100, seed=0, x64=False,
                    log=print) -> list[Difference]:
    """Loss, gradients and one sampled structure of both implementations on the same draws."""
    import jax
    import jax.numpy as jnp

    from ..model.convert import params_to_state_dict, state_dict_to_params
    from ..diffusion.se3 import FrameNoise
    from ..inference.sampling import SampleNoise, sample_jit
    from ..training.train_step import TrainNoise, loss_fn

    torch = import_torch()
    fdtype = np.float64 if x64 else np.float32
    tdtype = torch.float64 if x64 else torch.float32
    tol = 1e-9 if x64 else 2e-3
    rng = np.random.default_rng(seed)

    ref = ref_module.AlphaFold2(**config.to_dict()).to(tdtype)
    randomise_weights(ref, seed)
    params = state_dict_to_params(ref.state_dict(), config, fdtype)

    L = max(lengths)
    batch = pad_batch([synthetic_protein(n, rng) for n in lengths], L, fdtype)
    B = len(lengths)
    t = rng.uniform(0.05, 1.0, B)
    omega, axis, trans = rng.standard_normal((B, L)), rng.standard_normal((B, L, 3)), rng.standard_normal((B, L, 3))
    draws = [x.astype(fdtype) for x in (t, omega, axis, trans)]

    # Reference: forward (its own losses) and backward.
    ref.train()
    ref.zero_grad()
    with scripted_draws(ref_module, draws):
        out = ref(to_torch(batch, tdtype))
    out["loss"].backward()
    ref_grads = {name: p.grad.detach().cpu().numpy() for name, p in ref.named_parameters()}

    # Ours, on the same draws.
    noise = TrainNoise(*map(jnp.asarray, draws[:1]), FrameNoise(*map(jnp.asarray, draws[1:])))
    jbatch = to_jax(batch)
    grad_fn = jax.jit(jax.grad(lambda p: loss_fn(p, jbatch, noise, config), has_aux=True))
    grads, metrics = grad_fn(params)
    grads = params_to_state_dict(grads)

    diffs = []
    for k in ("loss", "trans_loss", "rot_loss", "fape_loss"):
        diffs.append(_difference(f"loss: {k}", metrics[k], out[k].item(), tol))
    grad_diffs = [_difference(f"grad {name}", grads[name], g, tol) for name, g in ref_grads.items()]
    # Each tensor's error relative to its own largest entry, floored at 1e-3 of the largest
    # gradient anywhere (some gradients are zero up to rounding, e.g. a LayerNorm bias feeding
    # only a softmax's logits, which cannot move it).
    floor = 1e-3 * max(d.scale for d in grad_diffs)
    rel = lambda d: d.max_abs / max(d.scale, floor)
    worst = sorted(grad_diffs, key=lambda d: -rel(d))[:3]
    diffs.append(Difference(f"gradients: worst relative of {len(grad_diffs)} tensors", rel(worst[0]), 1.0, tol))

    # Sampling: one structure, num_steps reverse steps.
    seq_len = lengths[0]
    sequence = batch["sequence"][0, :seq_len]
    sample_draws = [rng.standard_normal((1, seq_len)), rng.standard_normal((1, seq_len, 3)),
                    rng.standard_normal((1, seq_len, 3))]
    sample_draws += [rng.standard_normal((1, seq_len, 3)) for _ in range(num_steps - 1)]
    sample_draws = [x.astype(fdtype) for x in sample_draws]
    saved_steps = ref_module.NUM_SAMPLE_STEPS
    ref_module.NUM_SAMPLE_STEPS = num_steps
    saved_identity = ref_module.RigidTransform.__dict__["identity"]
    if x64:  # predict starts from RigidTransform.identity, whose dtype defaults to float32
        original = saved_identity.__func__
        ref_module.RigidTransform.identity = classmethod(
            lambda cls, shape, device="cpu", dtype=None: original(cls, shape, device, torch.get_default_dtype()))
    try:
        with scripted_draws(ref_module, sample_draws), torch.no_grad():
            ref_sample = ref.predict(torch.from_numpy(sequence))
    finally:
        ref_module.NUM_SAMPLE_STEPS = saved_steps
        ref_module.RigidTransform.identity = saved_identity
    snoise = SampleNoise(*(jnp.asarray(x) for x in sample_draws[:3]), jnp.asarray(np.stack(sample_draws[3:])))
    ours = sample_jit(params, jnp.asarray(sequence.astype(np.int32)), snoise, config)
    # Errors grow along the 100 steps; the tolerance is on coordinates in Å.
    sample_tol = 1e-9 if x64 else 2e-2
    for k in ("coords_CA", "coords_N", "coords_C", "plddt"):
        ours_k = ours[k] if k == "plddt" else ours[k][0]
        diffs.append(_difference(f"sample ({num_steps} steps): {k}", ours_k, ref_sample[k].numpy(), sample_tol))

    log(f"numbers: {'float64' if x64 else 'float32'}, batch of {B} (lengths {', '.join(map(str, lengths))}, "
        f"padded to {L}), sample of length {seq_len}")
    for d in diffs:
        log(d.line())
    log("  largest gradient differences:")
    for d in worst:
        log("  " + d.line())
    return diffs


# ---------------------------------------------------------------------------------------------
# 2. / 3. Timing
# ---------------------------------------------------------------------------------------------


def _median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median, min) seconds of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


class ReferenceTrainer:
    """The reference's train.py step: forward, backward, clip_grad_norm_(1.0), AdamW, LambdaLR."""

    def __init__(self, ref):
        torch = import_torch()
        self.torch, self.model = torch, ref
        self.opt = torch.optim.AdamW(ref.parameters(), lr=3e-3)
        warmup, total = 10, 8000
        lam = lambda s: s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lam)

    def step(self, batch):
        self.model.train()
        out = self.model(batch)
        self.opt.zero_grad()
        out["loss"].backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        return out["loss"].item()


class JaxTrainer:
    """Our jitted keyed train step (noise drawn inside the step, like the reference's forward)."""

    def __init__(self, params, config, attention_mask: bool):
        import jax

        from ..training.train_step import OptimConfig, make_keyed_train_step, make_optimizer

        self.jax = jax
        optimizer = make_optimizer(OptimConfig())
        self.params = jax.tree_util.tree_map(lambda x: x.copy(), params)
        self.opt_state = optimizer.init(self.params)
        self.fn = make_keyed_train_step(config, optimizer, attention_mask=attention_mask)
        self.key = jax.random.PRNGKey(0)
        self.compiled_shapes = set()

    def step(self, batch):
        self.key, sub = self.jax.random.split(self.key)
        self.params, self.opt_state, metrics = self.fn(self.params, self.opt_state, batch, sub)
        return float(metrics["loss"])  # blocks until the step is done


def bucket_length(length: int, buckets) -> int:
    for edge in buckets:
        if edge >= length:
            return edge
    return length


def default_buckets():
    from ..training.train_config import DEFAULT_BUCKETS  # the `default` recipe's buckets

    return tuple(DEFAULT_BUCKETS)


def run_timing(ref_module, config, *, lengths, repeats, num_steps, threads, epoch, data_dir,
               sample_lengths, seed=0, log=print) -> dict:
    import jax
    import jax.numpy as jnp

    from ..model.convert import state_dict_to_params
    from ..inference.sampling import sample_with_key

    torch = import_torch()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ref = ref_module.AlphaFold2(**config.to_dict())
    params = state_dict_to_params(ref.state_dict(), config)
    results = {"train_step": {}, "sampling": {}}
    lines = []

    def report(line):
        lines.append(line)
        log(line)

    # Train step at each padded length, batch 1.
    for L in lengths:
        protein = synthetic_protein(L, rng)
        batch = pad_batch([protein], L)
        rt = ReferenceTrainer(ref_module.AlphaFold2(**config.to_dict()))
        tb = to_torch(batch)
        r_med, r_min = _median_time(lambda: rt.step(tb), repeats)
        jt = JaxTrainer(params, config, attention_mask=False)
        jb = to_jax(batch)
        start = time.perf_counter()
        jt.step(jb)
        compile_s = time.perf_counter() - start
        j_med, j_min = _median_time(lambda: jt.step(jb), repeats, warmup=0)
        results["train_step"][L] = {"reference_s": r_med, "reference_min_s": r_min, "jax_s": j_med,
                                    "jax_min_s": j_min, "jax_first_call_s": compile_s}
        report(f"train step L={L}: reference {r_med:.3f} s, jax {j_med:.3f} s, speed-up {r_med / j_med:.1f}x"
               f"  (jax first call incl. compile {compile_s:.1f} s)")

    # 100-step sampling, one structure.
    ref.eval()
    saved_steps = ref_module.NUM_SAMPLE_STEPS
    ref_module.NUM_SAMPLE_STEPS = num_steps
    try:
        for L in sample_lengths:
            seq = rng.integers(0, 20, L)
            tseq = torch.from_numpy(seq)
            r_med, r_min = _median_time(lambda: ref.predict(tseq), max(1, repeats), warmup=1)
            jseq = jnp.asarray(seq.astype(np.int32))
            keys = iter(jax.random.split(jax.random.PRNGKey(seed), 1000))
            run1 = lambda: jax.block_until_ready(sample_with_key(params, jseq, next(keys), config, 1, num_steps))
            start = time.perf_counter()
            run1()
            compile_s = time.perf_counter() - start
            j_med, j_min = _median_time(run1, repeats, warmup=0)
            results["sampling"][L] = {"reference_s": r_med, "jax_s": j_med, "jax_first_call_s": compile_s}
            report(f"sampling {num_steps} steps L={L}: reference {r_med:.2f} s, jax {j_med:.3f} s, "
                   f"speed-up {r_med / j_med:.1f}x  (jax first call incl. compile {compile_s:.1f} s)")

            # 8 samples in one call vs 8 single-sample calls of ours.
            run8 = lambda: jax.block_until_ready(sample_with_key(params, jseq, next(keys), config, 8, num_steps))
            run8()  # compile
            batched, _ = _median_time(run8, repeats, warmup=0)
            singles, _ = _median_time(lambda: [run1() for _ in range(8)], max(1, repeats // 2), warmup=0)
            results["sampling"][L].update({"jax_8_in_one_call_s": batched, "jax_8_single_calls_s": singles})
            report(f"8 samples L={L} ({num_steps} steps): 8 single calls {singles:.2f} s, one call {batched:.2f} s, "
                   f"speed-up {singles / batched:.1f}x")
    finally:
        ref_module.NUM_SAMPLE_STEPS = saved_steps

    if epoch:
        results["epoch"] = run_epoch(ref_module, params, config, data_dir, rng, report)
    results["lines"] = lines
    return results


def run_epoch(ref_module, params, config, data_dir, rng, report) -> dict:
    """One epoch over the reference's 8 proteins: its recipe vs our default recipe."""
    if data_dir:
        proteins = load_proteins(data_dir)
        source = f"{len(proteins)} structures from {data_dir}"
    else:
        proteins = [synthetic_protein(n, rng) for n in REFERENCE_PROTEIN_LENGTHS]
        source = "synthetic structures of lengths " + ", ".join(map(str, REFERENCE_PROTEIN_LENGTHS))
    lengths = [len(p["sequence"]) for p in proteins]
    buckets = default_buckets()

    rt = ReferenceTrainer(ref_module.AlphaFold2(**config.to_dict()))
    ref_batches = [to_torch(pad_batch([p], REFERENCE_PAD_LENGTH)) for p in proteins]
    rt.step(ref_batches[0])  # warm-up (allocator, threads)
    start = time.perf_counter()
    for b in ref_batches:
        rt.step(b)
    ref_epoch = time.perf_counter() - start

    jt = JaxTrainer(params, config, attention_mask=True)
    padded = [bucket_length(n, buckets) for n in lengths]
    jax_batches = [to_jax(pad_batch([p], edge)) for p, edge in zip(proteins, padded)]
    start = time.perf_counter()
    for b in jax_batches:
        jt.step(b)
    first_epoch = time.perf_counter() - start  # compiles one step per bucket
    epochs = []
    for _ in range(3):
        start = time.perf_counter()
        for b in jax_batches:
            jt.step(b)
        epochs.append(time.perf_counter() - start)
    jax_epoch = statistics.median(epochs)
    report(f"epoch ({source}): reference (pad to {REFERENCE_PAD_LENGTH}, batch 1) {ref_epoch:.2f} s, "
           f"jax default recipe (buckets {sorted(set(padded))}, attention mask) {jax_epoch:.3f} s, "
           f"speed-up {ref_epoch / jax_epoch:.1f}x  (jax first epoch incl. {len(set(padded))} compilations "
           f"{first_epoch:.1f} s)")
    return {"source": source, "lengths": lengths, "padded": padded, "reference_s": ref_epoch,
            "jax_s": jax_epoch, "jax_first_epoch_s": first_epoch}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


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
