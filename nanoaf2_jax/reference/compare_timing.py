"""Timing this port against the PyTorch reference in one process: a train step at each padded
length, sampling runs, 8 samples in one call against 8 calls, and one epoch of each recipe
over the reference's 8 proteins."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from .compare import (
    REFERENCE_PAD_LENGTH,
    REFERENCE_PROTEIN_LENGTHS,
    load_proteins,
    pad_batch,
    synthetic_protein,
    to_jax,
    to_torch,
)
from .torch_reference import import_torch


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
    ref = ref_module.AlphaFold2(**config.reference_kwargs())
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
        rt = ReferenceTrainer(ref_module.AlphaFold2(**config.reference_kwargs()))
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

    rt = ReferenceTrainer(ref_module.AlphaFold2(**config.reference_kwargs()))
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
