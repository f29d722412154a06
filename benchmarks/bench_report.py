"""The markdown table of a benchmark run (used by bench.py)."""

from __future__ import annotations


def mib(b):
    return "–" if b is None else f"{b / 2**20:,.0f}"


def _s(x):
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _precision_table(result: dict) -> list[str]:
    """Train step per precision (bench.py --precisions float32 bf16), same run, same lengths."""
    others = [p for p in result.get("precisions", ["float32"]) if p != "float32"]
    if not others:
        return []
    head = "| L | float32 step (s) | " + " | ".join(f"{p} step (s) | {p} compile (s) | float32 / {p}" for p in others) + " |"
    lines = ["", "Train step by precision (`--precision`; parameters, optimiser state, LayerNorm statistics, "
             "softmax and losses stay float32):", "", head,
             "|---:|---:|" + "---:|---:|---:|" * len(others)]
    for L, r in result["lengths"].items():
        f32 = r.get("train_step", {}).get("median_s")
        cells = [f"| {L} | {_s(f32)} |"]
        for p in others:
            t = r[f"train_step_{p}"]
            ratio = f"{f32 / t['median_s']:.2f}×" if f32 else "–"
            cells.append(f" {_s(t['median_s'])} | {_s(t['compile_s'])} | {ratio} |")
        lines.append("".join(cells))
    return lines


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
            f"{rate / 1e9 if rate else float('nan'):.1f} | {frac} | {mib(tr['peak_memory_bytes'])} | "
            f"{mib(tr['xla_memory'].get('temp'))} | {_s(tk.get('median_s'))} | {_s(tk.get('compile_s'))} | "
            f"{_s(s1.get('median_s'))} | {_s(s8.get('median_s'))} | {per} | "
            f"{_s(s1.get('compile_s'))}/{_s(s8.get('compile_s'))} |"
        )
    lines += _precision_table(result)
    lines += [
        "",
        "GFLOP/step: XLA's count (cost_analysis()['flops']) for the train step lowered with the triangular "
        "attention as one chunk, so that no loop body is counted once only; it includes the attention "
        "recomputation of our backward pass. "
        "Peak memory: " + next(iter(result["lengths"].values()))["train_step"]["peak_memory_kind"] + " during the "
        "train-step measurement. XLA temp: the train step's temporary buffers (compiled.memory_analysis()).",
    ]
    return "\n".join(lines) + "\n"
