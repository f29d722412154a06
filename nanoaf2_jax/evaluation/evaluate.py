"""Score a checkpoint on known structures: predict each protein of a directory from its own
sequence and compare the samples with the native chain.

    python -m nanoaf2_jax.evaluate --checkpoint CKPT --data-dir DIR [--num-samples N] [--out DIR]

Per protein: CA-RMSD after Kabsch superposition, TM-score (normalised by the native length),
CA lDDT, each as the best and the mean over samples, and the mean pLDDT. Writes to --out:
evaluation.md (the table), evaluation.json (every sample's scores), {protein}.png (distance
maps and pLDDT of the best sample by TM-score) and that sample's structure
{protein}_sample{k}.pdb. Files appear only when the whole evaluation succeeds.

The command line is cli/evaluate.py; `run(args)` takes its parsed arguments.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.structures import load_dataset
from ..inference.output import (describe_checkpoint, format_value, log, staged_output, write_json,
                                write_samples)
from ..inference.predict import (check_memory, load_model, native_residue_index, native_rules,
                                 predict_codes, record_seed, with_sampling_options)
from ..inference.records import Record, record_from_protein, unique_names
from .scoring import (best_and_mean, best_sample, pearson_r, plddt_calibration, sample_backbone,
                      score_prediction, write_plot)

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
    ("pLDDT − 100·lDDT", "plddt_error", 1),
]


def evaluate_record(params, config, record: Record, native_ca, seed, num_samples: int,
                    num_steps: int, native_backbone=None, residue_index=None) -> tuple[dict, dict]:
    """(sampling result, entry with per-sample and best/mean scores) for one protein;
    with native_backbone (N, CA, C) the whole-backbone scores too."""
    start = time.perf_counter()
    result = predict_codes(params, config, record.codes, seed, num_samples, num_steps,
                           residue_index=residue_index)
    seconds = time.perf_counter() - start
    scores = [score_prediction(ca, native_ca, sample_backbone(result, k), native_backbone)
              for k, ca in enumerate(result["coords_CA"])]
    calibration = plddt_calibration(result["plddt"], result["coords_CA"], native_ca)
    for s, per_sample in zip(scores, calibration.pop("samples")):
        s.update(per_sample)
    entry = {
        "protein": record.name,
        "residues": record.length,
        "sequence": record.sequence,
        "seconds": seconds,
        "best_sample": best_sample(scores),
        "samples": [{"sample": k, **s} for k, s in enumerate(scores)],
        **best_and_mean(scores),
        **calibration,
    }
    return result, entry


def mean_row(entries: list[dict]) -> dict:
    """Unweighted mean over proteins of every table column."""
    row = {"protein": "mean", "residues": float(np.mean([e["residues"] for e in entries]))}
    for _, key, _ in COLUMNS:
        values = [e[key] for e in entries if e[key] is not None and not np.isnan(e[key])]
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
        cells += [format_value(e[key], digits) for _, key, digits in COLUMNS]
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
        "Best: lowest CA-RMSD, highest TM-score and highest lDDT among the samples, each taken "
        "on its own. CA-RMSD after Kabsch superposition; TM-score normalised by the native "
        "length; lDDT on CA atoms (15 Å inclusion radius). N-CA-C RMSD after superposing all "
        "three atoms; frame rotation error: the angle between each predicted residue frame "
        "(after that superposition) and the native one, averaged over residues; C-N within "
        "0.1 Å: the fraction of peptide bonds C(i)-N(i+1) within 0.1 Å of 1.33 Å. Mean pLDDT: "
        "over residues and samples (a model with the reference's sequence-only pLDDT head gives "
        "every sample the same); pLDDT − 100·lDDT: that mean minus 100 × the mean per-residue "
        "lDDT-Cα of the same samples (0 is calibrated). The PNG and structure file per protein "
        "show the sample with the highest TM-score.",
        "",
        f"Per-residue pLDDT against lDDT-Cα over every residue of every sample: Pearson r = "
        f"{format_value(residue_pearson(entries), 3)}.",
        "",
    ])


def residue_pearson(entries: list[dict]) -> float:
    """Pearson r of per-residue pLDDT with lDDT-Cα, pooled over all samples of all proteins."""
    pairs = [(p, q) for e in entries for s in e["samples"]
             for p, q in zip(s["plddt_per_residue"], s["lddt_per_residue"])]
    if not pairs:
        return float("nan")
    x, y = np.asarray(pairs, np.float64).T
    return pearson_r(x, y)


def run(args) -> list[dict]:
    params, config, info = load_model(args.checkpoint, args.preset)
    # The natives are read as the checkpoint's run read its training structures.
    modified_residues, file_numbering = native_rules(info)
    proteins = load_dataset(args.data_dir, min_length=args.min_length, max_length=args.max_length,
                            modified_residues=modified_residues)
    records = unique_names([record_from_protein(p) for p in proteins])
    config = with_sampling_options(config, args)
    check_memory(records, config, args.num_samples, args.steps, args.max_memory_gb, args.force)
    checkpoint = describe_checkpoint(args.checkpoint, info)
    header_args = {"checkpoint": checkpoint, "seed": args.seed, "steps": args.steps}
    entries = []
    with staged_output(args.out, getattr(args, "overwrite", False)) as stage:
        for i, (rec, protein) in enumerate(zip(records, proteins)):
            log(f"[{i + 1}/{len(records)}] {rec.name}: {rec.length} residues, "
                f"{args.num_samples} sample(s) x {args.steps} steps ...")
            result, entry = evaluate_record(
                params, config, rec, protein.coords_CA, record_seed(args.seed, i), args.num_samples,
                args.steps, native_backbone=(protein.coords_N, protein.coords_CA, protein.coords_C),
                residue_index=native_residue_index(protein, file_numbering))
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
                f"{entry['tm_score_best']:.3f}, CA-RMSD best {entry['ca_rmsd_best']:.2f} Å "
                f"({entry['seconds']:.1f} s)")
        report = markdown_report(entries, args, checkpoint)
        write_json(stage / "evaluation.json", {
            "checkpoint": str(args.checkpoint), "checkpoint_info": info, "data_dir": str(args.data_dir),
            "config": config.to_dict(), "num_samples": args.num_samples, "steps": args.steps,
            "seed": args.seed, "proteins": entries,
            "mean": mean_row(entries) if entries else None,
            "plddt_lddt_pearson_r": residue_pearson(entries),
        })
        (stage / "evaluation.md").write_text(report)
    print(markdown_table(entries))
    log(f"wrote evaluation.md, evaluation.json and {len(entries)} PNG(s) to {args.out}")
    return entries
