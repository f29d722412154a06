"""Score a checkpoint on known structures: predict each protein of a directory from its own
sequence and compare the samples with the native chain.

    python -m nanoaf2_jax.evaluate --checkpoint CKPT --data-dir DIR [--num-samples N] [--out DIR]

Per protein: CA-RMSD after Kabsch superposition, TM-score (normalised by the native length),
CA lDDT, Q3 (P-SEA states) and the precision of the top L/5 long-range contacts, each as the best
and the mean over samples, the mean pLDDT, an ideal α-helix's scores, and (when the checkpoint's
run wrote training_sequences.fasta) the identity to the nearest training sequence. Then the
same by length bin, mean and median, beside the helix (length_bins.py). Writes to --out:
evaluation.md (the tables), evaluation.json (every sample's scores), {protein}.png (distance
maps and pLDDT of the best sample by TM-score) and that sample's structure
{protein}_sample{k}.pdb, and calibration.png (per-residue and per-protein pLDDT against the
samples' lDDT-Cα). Files appear only when the whole evaluation succeeds.

Each protein is sampled padded to its length bucket under a residue mask (inference/predict.py:
bucket_length), so the sampler compiles once per bucket, not once per protein.

The command line is cli/evaluate.py; `run(args)` takes its parsed arguments.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..data.structures import load_dataset
from ..inference.identity_prior import identity_prior_of, prior_identity, with_prior
from ..inference.output import (describe_checkpoint, format_value, log, staged_output, write_json,
                                write_samples)
from ..data.sequence_identity import LOW_IDENTITY, LOW_IDENTITY_NOTE
from ..inference.predict import native_residue_index as trunk_numbering
from ..inference.predict import (bucket_length, check_memory, compile_sampler, is_padded,
                                 load_model, native_rules, predict_codes, record_seed,
                                 with_sampling_options)
from ..inference.records import Record, record_from_protein, unique_names
from ..inference.sampling import sampler_compilations
from ..training.training_sequences import training_set_of
from .contacts import top_long_range_precision_of_map
from .length_bins import bin_summary, bin_table, helix_scores
from .scoring import (best_and_mean, best_sample, pearson_r, plddt_calibration, sample_backbone,
                      score_prediction, write_plot)

CALIBRATION_PLOT = "calibration.png"
COLUMNS = [
    # (header, key, digits)
    ("CA-RMSD best (Å)", "ca_rmsd_best", 2),
    ("CA-RMSD mean (Å)", "ca_rmsd_mean", 2),
    ("TM-score best", "tm_score_best", 3),
    ("TM-score mean", "tm_score_mean", 3),
    ("lDDT best", "lddt_best", 3),
    ("lDDT mean", "lddt_mean", 3),
    ("N-CA-C RMSD best (Å)", "backbone_rmsd_best", 2),
    ("N-CA-C RMSD mean (Å)", "backbone_rmsd_mean", 2),
    ("frame rotation error mean (°)", "rotation_error_deg_mean", 1),
    ("C-N within 0.1 Å mean", "c_n_within_0.1_mean", 2),
    ("mean pLDDT", "mean_plddt", 1),
    ("pLDDT head (before identity prior)", "mean_plddt_head", 1),
    ("pLDDT − 100·lDDT", "plddt_error", 1),
    ("Q3 best", "q3_best", 2),
    ("Q3 mean", "q3_mean", 2),
    ("long-range P@L/5 best", "long_range_precision_best", 2),
    ("long-range P@L/5 mean", "long_range_precision_mean", 2),
    ("trunk's long-range P@L/5 (distogram)", "trunk_long_range_precision", 2),
    ("Rg / native Rg mean", "rg_ratio_mean", 2),
    ("nearest training identity", "nearest_training_identity", 2),
]


def evaluate_record(params, config, record: Record, native_ca, seed, num_samples: int,
                    num_steps: int, native_backbone=None, native_residue_index=None,
                    pad_to: int | None = None, residue_index=None,
                    expected_lddt: float | None = None) -> tuple[dict, dict]:
    """(sampling result, entry with per-sample and best/mean scores) for one protein;
    with native_backbone (N, CA, C) the whole-backbone scores too; sampled padded to pad_to;
    pLDDT capped at expected_lddt (an identity prior, inference/identity_prior.py) if given."""
    start = time.perf_counter()
    result = with_prior(predict_codes(params, config, record.codes, seed, num_samples, num_steps,
                                      residue_index=residue_index, pad_to=pad_to), expected_lddt)
    seconds = time.perf_counter() - start
    scores = [score_prediction(ca, native_ca, sample_backbone(result, k), native_backbone,
                               native_residue_index)
              for k, ca in enumerate(result["coords_CA"])]
    calibration = plddt_calibration(result["plddt"], result["coords_CA"], native_ca)
    for s, per_sample in zip(scores, calibration.pop("samples")):
        s.update(per_sample)
    entry = {
        "protein": record.name,
        "residues": record.length,
        "sequence": record.sequence,
        "seconds": seconds,
        "padded_to": pad_to or record.length,
        "best_sample": best_sample(scores),
        "samples": [{"sample": k, **s} for k, s in enumerate(scores)],
        **best_and_mean(scores),
        **calibration,
    }
    if "contact_probability" in result:  # what the trunk knows of the contacts (distogram head)
        entry["trunk_long_range_precision"] = top_long_range_precision_of_map(
            result["contact_probability"], native_ca)
    if expected_lddt is not None:
        entry.update(identity_prior_lddt=expected_lddt,
                     mean_plddt_head=100.0 * float(np.mean(result["plddt_head"])))
    return result, entry


def mean_row(entries: list[dict]) -> dict:
    """Unweighted mean over proteins of every table column."""
    row = {"protein": "mean", "residues": float(np.mean([e["residues"] for e in entries]))}
    for _, key, _ in COLUMNS:
        values = [e[key] for e in entries if e.get(key) is not None and not np.isnan(e[key])]
        row[key] = float(np.mean(values)) if values else float("nan")
    return row


def markdown_table(entries: list[dict]) -> str:
    header = ["protein", "residues"] + [h for h, _, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    rows = [(e, e["protein"]) for e in entries]
    if len(entries) > 1:
        rows.append((mean_row(entries), "**mean**"))
    for e, label in rows:
        residues = e["residues"]
        cells = [label, f"{residues:.1f}" if isinstance(residues, float) else str(residues)]
        cells += [format_value(e.get(key), digits) for _, key, digits in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(entries: list[dict], args, checkpoint: str) -> str:
    return "\n".join([
        "# nanoaf2-jax evaluation",
        "",
        f"checkpoint `{checkpoint}`, data `{args.data_dir}`, {args.num_samples} sample(s) "
        f"per protein, {args.steps} steps, seed {args.seed}.",
        "",
        markdown_table(entries),
        "",
        "By length: mean / median over proteins of each protein's mean over samples; beside each "
        "score, an ideal α-helix of the protein's length (no sample to pick from).",
        "",
        bin_table(bin_summary(entries)),
        "",
        "Best: lowest CA-RMSD, highest TM-score and highest lDDT among the samples, each taken "
        "on its own. CA-RMSD after Kabsch superposition; TM-score normalised by the native "
        "length; lDDT on CA atoms (15 Å inclusion radius). Q3: the share of residues in the same P-SEA "
        "state (helix, strand, coil; from CA atoms) as in the native. Long-range P@L/5: of the L/5 "
        "residue pairs |i − j| ≥ 24 closest in the prediction, the share with native CA-CA < 8 Å "
        "(– when the native has no such contact). Nearest training identity: identical residues "
        "in the best alignment with any training sequence / the protein's length. N-CA-C RMSD after superposing all "
        "three atoms; frame rotation error: the angle between each predicted residue frame "
        "(after that superposition) and the native one, averaged over residues; C-N within "
        "0.1 Å: the fraction of peptide bonds C(i)-N(i+1) within 0.1 Å of 1.33 Å. Mean pLDDT: "
        "over residues and samples (a model with the reference's sequence-only pLDDT head gives "
        "every sample the same); pLDDT − 100·lDDT: that mean minus 100 × the mean per-residue "
        "lDDT-Cα of the same samples (0 is calibrated). The PNG and structure file per protein "
        "show the sample with the highest TM-score.",
        "",
        f"Per-residue pLDDT against lDDT-Cα over every residue of every sample: Pearson r = "
        f"{format_value(residue_pearson(entries), 3)}. The samples' agreement (each sample's "
        f"per-residue lDDT-Cα against the other samples) against lDDT-Cα: Pearson r = "
        f"{format_value(residue_pearson(entries, 'agreement_per_residue'), 3)} (– with one sample).",
        "",
    ])


def residue_pearson(entries: list[dict], confidence: str = "plddt_per_residue") -> float:
    """Pearson r of a per-residue confidence (pLDDT, or the samples' agreement) with lDDT-Cα,
    pooled over all samples of all proteins."""
    pairs = [(p, q) for e in entries for s in e["samples"] if confidence in s
             for p, q in zip(s[confidence], s["lddt_per_residue"])]
    if not pairs:
        return float("nan")
    x, y = np.asarray(pairs, np.float64).T
    return pearson_r(x, y)


@contextlib.contextmanager
def _shut_down_on_exit(executor):
    """On any exit, an error or Ctrl-C included, the programs not yet started are dropped
    rather than compiled."""
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _program_key(length: int, pad_to: int | None, numbered: bool) -> tuple:
    """Which sampler program a protein needs: its padded length under a mask, or its own
    length unmasked, with or without a residue numbering."""
    padded = is_padded(length, pad_to)
    return (pad_to if padded else length, padded, numbered)


def run(args) -> list[dict]:
    params, config, info = load_model(args.checkpoint, args.preset)
    # The natives are read as the checkpoint's run read its training structures.
    modified_residues, file_numbering = native_rules(info)
    proteins = load_dataset(args.data_dir, min_length=args.min_length, max_length=args.max_length,
                            modified_residues=modified_residues)
    records = unique_names([record_from_protein(p) for p in proteins])
    config = with_sampling_options(config, args)
    exact = getattr(args, "exact_lengths", False)
    # The memory a protein needs is that of the length it is sampled at: its bucket's.
    sampled = records if exact else [SimpleNamespace(name=r.name, length=bucket_length(r.length))
                                     for r in records]
    check_memory(sampled, config, args.num_samples, args.steps, args.max_memory_gb, args.force)
    checkpoint = describe_checkpoint(args.checkpoint, info)
    header_args = {"checkpoint": checkpoint, "seed": args.seed, "steps": args.steps}
    training_set = training_set_of(args.checkpoint)
    prior = identity_prior_of(args, training_set)
    compilations = sampler_compilations()
    start = time.perf_counter()
    entries = []
    pads = [None if exact else bucket_length(rec.length) for rec in records]
    numbering = [trunk_numbering(protein, file_numbering) for protein in proteins]
    compiler = ThreadPoolExecutor(1)
    with staged_output(args.out, getattr(args, "overwrite", False)) as stage, \
            _shut_down_on_exit(compiler):
        # One thread compiles (or reads back) each program ahead, in the order the proteins
        # need them, while this one samples and scores: XLA compiles without the GIL, and the
        # scoring and plots are single-threaded Python.
        programs = {}
        for rec, pad_to, index in zip(records, pads, numbering):
            key = _program_key(rec.length, pad_to, index is not None)
            if key not in programs:
                programs[key] = compiler.submit(compile_sampler, params, config, rec.length,
                                                args.num_samples, args.steps,
                                                numbered=index is not None, pad_to=pad_to)
        for i, (rec, protein) in enumerate(zip(records, proteins)):
            pad_to = pads[i]
            programs[_program_key(rec.length, pad_to, numbering[i] is not None)].result()
            log(f"[{i + 1}/{len(records)}] {rec.name}: {rec.length} residues"
                f"{f' (bucket {pad_to})' if pad_to else ''}, "
                f"{args.num_samples} sample(s) x {args.steps} steps ...")
            nearest = None if training_set is None else training_set.nearest(rec.sequence)
            full_identity = None if prior is None else prior_identity(training_set, rec.sequence)
            result, entry = evaluate_record(
                params, config, rec, protein.coords_CA, record_seed(args.seed, i), args.num_samples,
                args.steps, native_backbone=(protein.coords_N, protein.coords_CA, protein.coords_C),
                native_residue_index=protein.residue_index, pad_to=pad_to,
                residue_index=numbering[i],
                expected_lddt=None if prior is None else prior.expected(full_identity))
            entry["helix"] = helix_scores(protein.coords_CA, protein.residue_index)
            if nearest is not None:
                entry["nearest_training_identity"], entry["nearest_training_sequence"] = nearest
            if full_identity is not None:
                entry["full_length_identity"] = full_identity
            k = entry["best_sample"]
            entry["file"] = write_samples(stage, rec, result, args.format, header_args,
                                          indices=[k])[0]
            entry["plot"] = f"{rec.name}.png"
            write_plot(stage / entry["plot"], rec.name, result["coords_CA"][k], protein.coords_CA,
                       result["plddt"][k], entry["samples"][k], k, args.num_samples,
                       pred_backbone=sample_backbone(result, k),
                       native_backbone=(protein.coords_N, protein.coords_CA, protein.coords_C),
                       sequence=rec.codes)
            entries.append(entry)
            log(f"[{i + 1}/{len(records)}] {rec.name}: TM-score best "
                f"{entry['tm_score_best']:.3f} (helix {entry['helix']['tm_score']:.3f}), Q3 mean "
                f"{entry['q3_mean']:.2f}, CA-RMSD best {entry['ca_rmsd_best']:.2f} Å "
                f"({entry['seconds']:.1f} s)")
            if training_set is not None and entry["nearest_training_identity"] < LOW_IDENTITY:
                log(f"[{i + 1}/{len(records)}] {rec.name}: nearest training sequence "
                    f"{entry['nearest_training_identity']:.0%} identical ({entry['nearest_training_sequence']}): "
                    f"{LOW_IDENTITY_NOTE}")
        compilations = sampler_compilations() - compilations
        log(f"sampled and scored {len(entries)} protein(s) in {time.perf_counter() - start:.1f} s"
            + f" with {compilations} compilation(s) of the sampler"
            + ("" if exact else " (one per length bucket)"))
        report = markdown_report(entries, args, checkpoint)
        write_json(stage / "evaluation.json", {
            "checkpoint": str(args.checkpoint), "checkpoint_info": info, "data_dir": str(args.data_dir),
            "config": config.to_dict(), "num_samples": args.num_samples, "steps": args.steps,
            "seed": args.seed, "identity_prior": None if prior is None else asdict(prior),
            "proteins": entries,
            "mean": mean_row(entries) if entries else None,
            "by_length": bin_summary(entries) if entries else [],
            "sampler_compilations": compilations,
            "plddt_lddt_pearson_r": residue_pearson(entries),
            "agreement_lddt_pearson_r": residue_pearson(entries, "agreement_per_residue"),
        })
        (stage / "evaluation.md").write_text(report)
        if entries:
            from .plots import plot_calibration

            plot_calibration(stage / CALIBRATION_PLOT, entries,
                             title=f"pLDDT calibration: {checkpoint} on {Path(args.data_dir).name}")
    print(markdown_table(entries))
    log(f"wrote evaluation.md, evaluation.json, {CALIBRATION_PLOT} and {len(entries)} PNG(s) to {args.out}")
    return entries
