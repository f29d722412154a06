"""Timing the port's compiled programs: one train step, the Pairformer trunk and a sampling run
at a given length, and the machine's float32 matmul peak (used by bench.py)."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_machine import PeakMemory, memory_analysis, xla_flops
from nanoaf2_jax.inference.sampling import draw_sample_noise, sample_jit
from nanoaf2_jax.model import pairformer
from nanoaf2_jax.model.alphafold2 import AlphaFold2, init_params
from nanoaf2_jax.training.train_step import OptimConfig, draw_train_noise, make_optimizer, make_train_step

GEMM_SIZE = 2048


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


def bench_train_step(config, length, repeats, attention_mask, compute_dtype=None) -> dict:
    """compute_dtype: None (float32) or jnp.bfloat16 (train.py --precision bf16)."""
    params = init_params(config, jax.random.PRNGKey(0))
    optimizer = make_optimizer(OptimConfig())
    opt_state = optimizer.init(params)
    batch = synthetic_batch(length)
    noise = draw_train_noise(jax.random.PRNGKey(1), 1, length)
    step = make_train_step(config, optimizer, attention_mask=attention_mask,
                           compute_dtype=compute_dtype)  # donates params, opt_state
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
        unchunked = make_train_step(config, optimizer, attention_mask=attention_mask, donate=False,
                                    compute_dtype=compute_dtype)
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
