"""The sample command (`python sample.py`): its arguments, and the run they drive.

Sequences (--sequence, --fasta or the chain of --native) are predicted with inference/,
written with inference/output.py and, with --native, scored with evaluation/scoring.py.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import numpy as np

from ..data.sequence_identity import LOW_IDENTITY, LOW_IDENTITY_NOTE
from ..data.structures import Protein, parse_structure_spec
from ..evaluation.scoring import best_and_mean, best_sample, sample_backbone, score_prediction, write_plot
from ..inference.identity_prior import identity_prior_of, prior_identity, with_prior
from ..inference.output import (
    describe_checkpoint,
    format_value,
    log,
    staged_output,
    text_table,
    write_json,
    write_samples,
)
from ..inference.predict import (check_memory, load_model, native_residue_index, native_rules,
                                 predict_chunks, record_seed, with_sampling_options)
from ..inference.records import InputError, Record, record_from_protein, records_from_inputs
from ..model.precision import set_matmul_precision
from .compilation_cache import enable_compilation_cache
from ..training.training_sequences import training_set_of
from .options import add_model_arguments, cli_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sample.py",
        description=(
            "Predict backbone structures (N, CA, C) of protein sequences with a trained\n"
            "nanoaf2-jax model by reverse SE(3) diffusion. Per sequence, all samples are drawn\n"
            "in one compiled call (the trunk runs once).\n\n"
            "Writes to --out: {record}_sample{k}.pdb (or .cif) for k = 0..N-1, pLDDT x 100 in\n"
            "the B-factor column, and summary.json; prints a table of mean pLDDT per sample\n"
            "(with --native also CA-RMSD, TM-score and CA lDDT, and {record}.png of the best\n"
            "sample). Files appear only when the whole run succeeds."),
        epilog=(
            "Sequences: one-letter codes of the 20 amino acids or X (unknown), any case;\n"
            "whitespace and a final '*' (stop codon) are ignored. The same --seed gives the same\n"
            "structures; sample k of a record does not depend on --num-samples.\n\n"
            "Examples:\n"
            "  python sample.py --checkpoint outputs/default --sequence MQIFVKTL... --num-samples 5\n"
            "  python sample.py --checkpoint model.pt --preset reference --fasta seqs.fa --out preds\n"
            "  python sample.py --checkpoint outputs/default --native data/pdb/1UBQ.pdb:A "
            "--num-samples 8"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sequence", action="append", default=[], metavar="SEQ",
                        help="a sequence to predict; repeatable; named seq1, seq2, ... in order")
    parser.add_argument("--fasta", action="append", default=[], metavar="FILE",
                        help="a FASTA file with any number of records; each is named by the first "
                             "word of its header (characters other than letters, digits, '.', "
                             "'_' and '-' become '_'); repeatable")
    parser.add_argument(
        "--native", metavar="FILE[:CHAIN]",
        help="a PDB/mmCIF structure to score the samples against (one sequence only). Without "
             "--sequence/--fasta its chain's own sequence is predicted; with one, the lengths "
             "must match. Residue i of the prediction is compared with the i-th residue of the "
             "chain that has N, CA and C")
    add_model_arguments(parser)
    parser.add_argument("--batch-samples", type=int, default=None, metavar="K",
                        help="samples per compiled call (default: the most whose estimated peak "
                             "memory fits the limit); each call's structures are written before "
                             "the next is drawn, so --num-samples is bounded by the disk")
    parser.add_argument("--out", default="preds", metavar="DIR",
                        help="output directory (created; one that already holds predictions is "
                             "refused unless --overwrite) (default: %(default)s)")
    return parser


def resolve_inputs(args, modified_residues: bool = False) -> tuple[list[Record], Protein | None]:
    records = records_from_inputs(args.sequence, args.fasta)
    native = None
    if args.native:
        native = parse_structure_spec(args.native, modified_residues=modified_residues)
        if not records:
            records = [record_from_protein(native)]
        elif len(records) > 1:
            raise InputError(f"--native scores one sequence, but {len(records)} were given")
        elif records[0].length != native.length:
            raise InputError(
                f"record {records[0].name!r} has {records[0].length} residues but the native "
                f"{args.native} (chain {native.chain}) has {native.length}")
        else:
            diff = int(np.sum(records[0].codes != native.sequence))
            if diff:
                log(f"warning: record {records[0].name!r} differs from the native's sequence at "
                    f"{diff} of {native.length} positions; scoring residue i against residue i")
    if not records:
        raise InputError("nothing to predict: give --sequence, --fasta or --native")
    return records, native


def run(args) -> dict:
    records_from_inputs(args.sequence, args.fasta)  # bad input fails before the model loads
    params, config, info = load_model(args.checkpoint, args.preset)
    modified_residues, file_numbering = native_rules(info)
    records, native = resolve_inputs(args, modified_residues)
    residue_index = native_residue_index(native, file_numbering) if native is not None else None
    config = with_sampling_options(config, args)
    if args.batch_samples is not None and args.batch_samples < 1:
        raise InputError(f"--batch-samples must be at least 1, got {args.batch_samples}")
    per_call = check_memory(records, config, args.num_samples, args.steps, args.max_memory_gb,
                            args.force, args.batch_samples)
    if per_call < args.num_samples:
        log(f"sampling in calls of {per_call} samples (memory estimate or --batch-samples)")
    if args.preset and info.get("kind") == "checkpoint":
        log(f"note: --preset {args.preset} ignored: {args.checkpoint} carries its own model config")
    header_args = {"checkpoint": describe_checkpoint(args.checkpoint, info), "seed": args.seed,
                   "steps": args.steps}
    training_set = training_set_of(args.checkpoint)  # None: the run wrote no sequences
    prior = identity_prior_of(args, training_set)
    summary = {
        "checkpoint": str(args.checkpoint), "checkpoint_info": info, "config": config.to_dict(),
        "seed": args.seed, "steps": args.steps, "num_samples": args.num_samples,
        "format": args.format, "native": args.native, "records": [],
        "identity_prior": None if prior is None else asdict(prior),
    }
    with staged_output(args.out, getattr(args, "overwrite", False)) as stage:
        for i, rec in enumerate(records):
            log(f"[{i + 1}/{len(records)}] {rec.name}: {rec.length} residues, "
                f"{args.num_samples} sample(s) x {args.steps} steps ...")
            nearest = None if training_set is None else training_set.nearest(rec.sequence)
            full_identity = None if prior is None else prior_identity(training_set, rec.sequence)
            expected = None if prior is None else prior.expected(full_identity)
            start = time.perf_counter()
            files, plddt, head_plddt, scores, best = [], [], [], [], None
            for first, result in predict_chunks(params, config, rec.codes, record_seed(args.seed, i),
                                                args.num_samples, args.steps, per_call,
                                                residue_index):
                result = with_prior(result, expected)
                head_plddt.append(result.get("plddt_head", result["plddt"]))
                n = result["coords_CA"].shape[0]
                files += write_samples(stage, rec, result, args.format, header_args,
                                       indices=range(n), first=first, total=args.num_samples)
                plddt.append(result["plddt"])
                if native is not None:
                    native_backbone = (native.coords_N, native.coords_CA, native.coords_C)
                    chunk = [score_prediction(ca, native.coords_CA, sample_backbone(result, k), native_backbone)
                             for k, ca in enumerate(result["coords_CA"])]
                    scores += chunk
                    k = best_sample(chunk)
                    if best is None or (chunk[k]["tm_score"], -chunk[k]["ca_rmsd"]) > best[0]:
                        best = ((chunk[k]["tm_score"], -chunk[k]["ca_rmsd"]), first + k,
                                result["coords_CA"][k], result["plddt"][k], sample_backbone(result, k))
            seconds = time.perf_counter() - start
            plddt = np.concatenate(plddt)
            mean_plddt = 100.0 * float(np.mean(plddt))
            samples = [{"sample": k, "file": f, "mean_plddt": 100.0 * float(np.mean(plddt[k]))}
                       for k, f in enumerate(files)]
            entry = {"name": rec.name, "length": rec.length, "sequence": rec.sequence,
                     "mean_plddt": mean_plddt, "plddt": 100.0 * plddt,
                     "seconds": seconds, "samples": samples}
            if nearest is not None:
                identity, name = nearest
                entry.update(nearest_training_identity=identity, nearest_training_sequence=name)
                if identity < LOW_IDENTITY:
                    log(f"[{i + 1}/{len(records)}] {rec.name}: nearest training sequence {identity:.0%} "
                        f"identical ({name}): {LOW_IDENTITY_NOTE}")
            if expected is not None:
                entry.update(identity_prior_lddt=expected, full_length_identity=full_identity,
                             mean_plddt_head=100.0 * float(np.mean(np.concatenate(head_plddt))))
                if entry["mean_plddt_head"] > mean_plddt + 0.05:
                    log(f"[{i + 1}/{len(records)}] {rec.name}: pLDDT {entry['mean_plddt_head']:.1f} "
                        f"capped at {mean_plddt:.1f}: this model's samples reach lDDT-Cα "
                        f"{expected:.2f} at {full_identity:.0%} identity over the longer sequence "
                        f"(identity prior)")
            if native is not None:
                for s, sc in zip(samples, scores):
                    s.update(sc)
                entry.update(best_and_mean(scores))
                _, k, best_ca, best_plddt, best_backbone = best
                entry["best_sample"] = k
                entry["plot"] = f"{rec.name}.png"
                write_plot(stage / entry["plot"], rec.name, best_ca, native.coords_CA, best_plddt,
                           scores[k], k, args.num_samples, pred_backbone=best_backbone,
                           native_backbone=native_backbone, sequence=rec.codes)
            summary["records"].append(entry)
            log(f"[{i + 1}/{len(records)}] {rec.name}: done in {seconds:.1f} s "
                f"(mean pLDDT {mean_plddt:.1f})")
        write_json(stage / "summary.json", summary)
    print(summary_table(summary))
    n_files = sum(len(r["samples"]) for r in summary["records"])
    log(f"wrote {n_files} structure file(s) and summary.json to {args.out}")
    return summary


def summary_table(summary: dict) -> str:
    scored = summary.get("native") is not None
    header = ["record", "sample", "length", "mean pLDDT"]
    if scored:
        header += ["CA-RMSD (Å)", "TM-score", "lDDT"]
    header.append("file")
    rows = []
    for rec in summary["records"]:
        for s in rec["samples"]:
            row = [rec["name"], str(s["sample"]), str(rec["length"]), format_value(s["mean_plddt"], 1)]
            if scored:
                row += [format_value(s["ca_rmsd"]), format_value(s["tm_score"], 3),
                        format_value(s["lddt"], 3)]
            rows.append(row + [s["file"]])
    return text_table(header, rows)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache(args.compilation_cache)
    set_matmul_precision(args.matmul_precision)
    with cli_errors():
        run(args)
    return 0
