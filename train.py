"""Train nano-AlphaFold2 in JAX.

    python train.py                                # default recipe on the reference's 8 PDB IDs
    python train.py --preset reference             # the PyTorch train.py's recipe exactly
    python train.py --preset tiny --data-dir DIR   # a small model on every structure in DIR
    python train.py --preset tiny --resume         # continue outputs/tiny from its last checkpoint
    python train.py --preset calibrate --init-from outputs/default   # its pLDDT head alone

The recipes are in configs.py; the loop in nanoaf2_jax/training/trainer.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from configs import PRESETS, get_preset
from nanoaf2_jax.cli.compilation_cache import add_compilation_cache_argument, enable_compilation_cache
from nanoaf2_jax.data.download import RCSB_DOWNLOAD_URL, DownloadError, validate_pdb_id
from nanoaf2_jax.data.structures import StructureError
from nanoaf2_jax.model import model_config
from nanoaf2_jax.model.precision import add_matmul_precision_argument, set_matmul_precision
from nanoaf2_jax.training.mixed_precision import PRECISIONS
from nanoaf2_jax.training.train_config import LOADERS, ConfigError, TrainConfig, TrainingError
from nanoaf2_jax.training.trainable import TRAINABLE

# (flag, config field, type, help). The field is TrainConfig's, ModelConfig's or Optimisation's.
_OVERRIDES = [
    ("Schedule", [
        ("--epochs", "epochs", int, "passes over the data; the cosine schedule spans them all"),
        ("--batch-size", "batch_size", int, "proteins per step"),
        ("--lr", "lr", float, "peak learning rate (AdamW)"),
        ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
        ("--warmup-steps", "warmup_steps", int, "linear warmup from 0 over this many steps"),
        ("--grad-clip", "grad_clip", float, "clip the global gradient norm to this"),
        ("--ema-decay", "ema_decay", "optional_float",
         "evaluate, export and sample with an exponential moving average of the weights at "
         "this decay (AlphaFold 2: 0.999); 'none': the raw weights"),
        ("--seed", "seed", int, "seeds the weights, the noise and the data order"),
    ]),
    ("Data and padding", [
        ("--data-dir", "data_dir", "dirs",
         "train on every structure file in this directory (nothing is downloaded), or on a cache "
         "made by python -m nanoaf2_jax.prepare; without it, the --pdb-ids are downloaded into "
         "--download-dir. Given several times (loader grain): every directory, mixed as "
         "--data-mix says"),
        ("--data-mix", "data_mix", "counts",
         "chains per epoch from each --data-dir, in their order (fewer chains are repeated, more "
         "give a new seeded subset each epoch; with one directory, an epoch of that many of its "
         "chains); 'none': every chain once"),
        ("--pdb-ids", "pdb_ids", "ids", "PDB IDs to train on, comma-separated"),
        ("--min-length", "min_length", int, "drop proteins shorter than this"),
        ("--max-length", "max_length", int,
         "drop proteins longer than this (with --crop-size they are cropped instead, and this "
         "only bounds the proteins sampled by the evaluation during training)"),
        ("--pad-to", "pad_to", "optional_int", "pad every batch to this length ('none': buckets)"),
        ("--buckets", "buckets", "buckets",
         "length-bucket edges, comma-separated ('none': pad each batch to its own length)"),
        ("--attention-mask", "attention_mask", "bool",
         "mask padding out of attention and triangular updates (--no-attention-mask: the "
         "reference, padding only excluded from the losses)"),
    ]),
    ("Data pipeline (docs/data.md)", [
        ("--loader", "loader", "loader",
         "memory: parse every structure at start-up (the reference); grain: a cache (structure "
         "files are prepared into OUTPUT_DIR/data_cache) read through Grain, with crops"),
        ("--crop-size", "crop_size", "optional_int",
         "crop chains longer than this (contiguous or spatial) instead of dropping them "
         "('none': drop above --max-length)"),
        ("--spatial-crop-fraction", "spatial_crop_fraction", float,
         "share of crops that are spatial (nearest residues to a random one) not contiguous"),
        ("--file-numbering", "file_numbering", "bool",
         "the file's residue numbers reach the relative-position features, so chain breaks "
         "are visible (--no-file-numbering: 0..L-1, the reference)"),
        ("--modified-residues", "modified_residues", "bool",
         "keep HETATM polymer residues coded by their parent, MSE -> M (--no-modified-residues: "
         "ATOM records only, the reference)"),
        ("--loader-workers", "loader_workers", int,
         "Grain worker processes reading batches (0: threads of the training process)"),
        ("--batch-tokens", "batch_tokens", "optional_int",
         "a token budget per step instead of --batch-size: TOKENS // L chains of padded length "
         "L (at least one); 'none': --batch-size chains"),
    ]),
    ("Logging and checkpoints", [
        ("--output-dir", "output_dir", str, "checkpoints, metrics.jsonl and the final model"),
        ("--log-every", "log_every", int, "log a line and a metrics.jsonl record every N steps"),
        ("--checkpoint-every", "checkpoint_every_epochs", int, "checkpoint every N epochs"),
        ("--checkpoint-every-steps", "checkpoint_every_steps", int,
         "also checkpoint every N optimiser steps, mid-epoch too (0: off)"),
        ("--keep", "keep_checkpoints", int, "keep the N most recent checkpoints"),
        ("--eval-every", "eval_every_epochs", int,
         "every N epochs sample each training protein once (and up to --eval-max-proteins of "
         "--eval-dir) and log CA-RMSD, TM-score, lDDT, N-CA-C RMSD to metrics.jsonl, TensorBoard "
         "and OUTPUT_DIR/training_curves.png; 0: never"),
        ("--eval-steps", "eval_steps", int, "reverse-diffusion steps of those samples"),
        ("--eval-dir", "eval_dir", str, "also evaluate on proteins from this directory (not trained on)"),
        ("--eval-max-proteins", "eval_max_proteins", int, "at most this many proteins of --eval-dir"),
        ("--eval-every-steps", "eval_every_steps", int,
         "also evaluate every N optimiser steps, mid-epoch too (0: off)"),
        ("--eval-train-proteins", "eval_train_proteins", "optional_int",
         "evaluate at most this many training proteins ('none': all of them)"),
        ("--tensorboard", "tensorboard", "bool",
         "also write the logged metrics as TensorBoard event files into OUTPUT_DIR/tensorboard "
         "(view with: tensorboard --logdir OUTPUT_DIR); --no-tensorboard: metrics.jsonl only"),
    ]),
    ("Model", [
        ("--c-s", "c_s", int, "single representation channels"),
        ("--c-z", "c_z", int, "pair representation channels"),
        ("--c-atom", "c_atom", int, "denoiser channels"),
        ("--pairformer-blocks", "num_pairformer_blocks", int, "Pairformer blocks"),
        ("--pairformer-heads", "pairformer_heads", int, "Pairformer attention heads"),
        ("--denoise-blocks", "num_denoise_blocks", int, "denoiser transformer blocks"),
        ("--denoise-heads", "denoise_heads", int, "denoiser attention heads"),
        ("--plddt-bins", "num_plddt_bins", int, "pLDDT head bins"),
        ("--fape-weight", "fape_weight", float, "FAPE loss weight"),
        ("--trans-weight", "trans_weight", float, "translation loss weight"),
        ("--rot-weight", "rot_weight", float, "rotation loss weight"),
        ("--plddt-weight", "plddt_weight", float, "pLDDT loss weight"),
        ("--peptide-bond-weight", "peptide_bond_weight", float,
         "weight of the peptide-bond loss: mean |C(i)-N(i+1) - 1.329 Å| of the one-step "
         "prediction (0: no such term, the reference)"),
        ("--peptide-bond-max-t", "peptide_bond_max_t", float,
         "the peptide-bond loss scores only noise samples with t below this (1: every t)"),
        ("--peptide-bond-start", "peptide_bond_start", float,
         "the peptide-bond loss is on after this share of the run's optimiser steps (0: from "
         "the first step)"),
        ("--distogram-weight", "distogram_weight", float,
         "weight of AlphaFold 2's distogram loss: a head on the pair representation predicts "
         "binned CB-CB distances (0: no head, the reference)"),
        ("--plddt-rollout-steps", "plddt_rollout_steps", int,
         "train the pLDDT head on K-step reverse-diffusion rollouts from pure noise, the "
         "structures sampling gives (0: on the one-step prediction, the reference)"),
        ("--self-conditioning", "self_conditioning", "bool",
         "the denoiser also reads its previous estimate of the structure (its CA-CA distances "
         "as an attention bias): each reverse step's prediction in sampling, a detached first "
         "prediction for half of the training samples (--no-self-conditioning: the reference)"),
    ]),
    ("Fine-tuning (docs/generalisation.md)", [
        ("--init-from", "init_from", str,
         "start from the weights of this training checkpoint (a run directory: its latest "
         "complete checkpoint; or a step directory) with fresh optimiser state at step 0; the "
         "model is the checkpoint's, with the preset's (and the options') training-only fields "
         "(loss weights, plddt_rollout_steps, ...)"),
        ("--trainable", "trainable", "trainable",
         "the parameters trained: all, or plddt_head (the confidence head only; every other "
         "parameter stays bit-identical, so sampled structures do not change)"),
    ]),
    ("Scale (docs/distributed.md)", [
        ("--grad-accum", "grad_accum", int,
         "accumulate the gradients of K batches per optimiser step: effective batch K × "
         "--batch-size at the memory of one (--batch-size is the global batch, split over every "
         "device and must divide by their number)"),
        ("--precision", "precision", "precision",
         "float32, or bf16: matrix products and activations in bfloat16 on float32 parameters, "
         "optimiser state, LayerNorm statistics, softmaxes and losses"),
    ]),
    ("Diffusion", [
        ("--center-coords", "center_coords", "bool",
         "diffuse translations centred on each structure's CA centroid (--no-center-coords: "
         "the reference, raw PDB coordinates); samples come out centred"),
        ("--coord-scale", "coord_scale", float,
         "translations are diffused, predicted and their loss computed in Å times this "
         "(FAPE and pLDDT targets stay in Å); sampling starts from N(0, I) there"),
        ("--rotation-noise", "rotation_noise", "rotation_noise",
         "rotation noise of training: 'reference' (angle |N(0,1)·σ|, sampling starts from that "
         "at σ_max) or 'igso3' (exact IGSO3(σ), sampling starts from uniform rotations)"),
        ("--rot-sigma-max", "rot_sigma_max", float,
         "rotation noise schedule σ(t) = t · this"),
        ("--rotation-update", "rotation_update", "rotation_update",
         "the denoiser's rotation update from its output: 'rodrigues' (the reference's "
         "axis-angle map; from zero-initialised weights it never learns) or 'quaternion' "
         "(AlphaFold 2's (1, b, c, d)/norm)"),
        ("--translation-update", "translation_update", "translation_update",
         "the frame the denoiser's translation update is expressed in: 'local' (the reference: "
         "the noisy input frame) or 'global' (the diffusion space)"),
        ("--rotation-base", "rotation_base", "rotation_base",
         "what the rotation update composes onto: 'noisy' (the reference: the noisy input "
         "rotation) or 'ca_trace' (the frame of the predicted CA(i-1), CA(i), CA(i+1))"),
        ("--rotation-head", "rotation_head", "rotation_head",
         "where the rotation update comes from: 'output_proj' (the reference: the shared output "
         "layer) or 'local_geometry' (an MLP of the detached denoiser features and the CA "
         "neighbours in the base frame, so the rotation loss cannot disturb the translations)"),
        ("--fape-atoms", "fape_atoms", "fape_atoms",
         "atoms FAPE scores in every frame: 'ca' (the reference) or 'backbone' (N, CA, C)"),
        ("--plddt-head", "plddt_head", "plddt_head",
         "'single' (the reference: pLDDT from the trunk's single representation, one per "
         "sequence) or 'structure' (also reads the predicted CA distances: one per sample)"),
        ("--sampling-eta", "sampling_eta", "optional_float",
         "translation reverse step when sampling (also while training): none (the reference's "
         "step, in effect noise-free) or η of DDIM(η) with the correct posterior noise (0 "
         "deterministic, 1 DDPM); sample.py --eta overrides it"),
        ("--plddt-target", "plddt_target", "plddt_target",
         "what pLDDT is trained on: 'ca_distance' (the reference: clamp(1 - |ΔCA|/15 Å)) or "
         "'lddt_ca' (the prediction's lDDT-Cα)"),
        ("--diffusion-multiplicity", "diffusion_multiplicity", int,
         "noise samples per trunk pass: each batch row is denoised and scored at this many "
         "(t, noise) draws, the trunk run once (the reference: 1)"),
        ("--train-t-exponent", "train_t_exponent", float,
         "training draws t = u^this, u uniform: above 1, more samples at small t, where the "
         "last reverse steps are (the reference: 1, uniform t)"),
        ("--plddt-decoys", "plddt_decoys", "bool",
         "also train the pLDDT head on decoys: each row's sequence partly mutated, denoised "
         "from t = 1 by the detached model, scored against the native (needs --plddt-head "
         "structure; the reference: off)"),
    ]),
]


def _field_value(config: TrainConfig, field: str):
    for obj in (config, config.model, config.optimisation):
        if field in {f.name for f in dataclasses.fields(obj)}:
            return getattr(obj, field)
    raise KeyError(field)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _preset_values(field: str) -> str:
    values = {name: _show(_field_value(cfg, field)) for name, cfg in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"all presets: {next(iter(values.values()))}"
    return "; ".join(f"{name}: {v}" for name, v in values.items())


def _pdb_ids(text: str) -> tuple[str, ...]:
    try:
        return tuple(validate_pdb_id(i.strip()) for i in text.split(",") if i.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _int_list(what: str, example: str):
    """Parser of 'N,N,...' or 'none' (None), e.g. the bucket edges or the data mix's counts."""
    def parse(text: str) -> tuple[int, ...] | None:
        if text.lower() == "none":
            return None
        try:
            return tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: expected e.g. {example} "
                                             "or none") from None
    return parse


_buckets = _int_list("buckets", "32,64,128")
_counts = _int_list("counts", "200,200")


def _choice(what: str, allowed: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: choose one of "
                                             f"{', '.join(allowed)}")
        return text

    return parse


_CHOICES = {"rotation_noise": model_config.ROTATION_NOISES,
            "rotation_update": model_config.ROTATION_UPDATES,
            "translation_update": model_config.TRANSLATION_UPDATES,
            "rotation_base": model_config.ROTATION_BASES,
            "rotation_head": model_config.ROTATION_HEADS,
            "fape_atoms": model_config.FAPE_ATOMS,
            "plddt_head": model_config.PLDDT_HEADS,
            "plddt_target": model_config.PLDDT_TARGETS,
            "loader": LOADERS,
            "trainable": TRAINABLE,
            "precision": PRECISIONS}
_TYPES = {"ids": _pdb_ids, "optional_int": _optional_int, "optional_float": _optional_float,
          "buckets": _buckets, "counts": _counts, "dirs": str,
          **{name: _choice(name.replace("_", " "), allowed) for name, allowed in _CHOICES.items()}}
_METAVARS = {int: "N", float: "X", "ids": "IDS", "optional_int": "N|none", "optional_float": "X|none",
             "buckets": "EDGES|none", "counts": "N,N,...|none", "dirs": "DIR",
             **{name: "|".join(allowed) for name, allowed in _CHOICES.items()}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train nano-AlphaFold2 (JAX). A preset gives every setting; the options "
                    "below override single settings (bracketed: what each preset gives).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="default",
                        help="reference: the PyTorch recipe exactly (pad to 200, no attention "
                             "mask); default: same model and hyperparameters, attention mask and "
                             "length buckets; chains: thousands of chains in crops; calibrate: "
                             "the pLDDT head of a trained model (--init-from) alone; tiny: a small "
                             "model for smoke runs")
    run = parser.add_argument_group("Run")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --output-dir (or the preset's) from its latest "
                          "complete checkpoint, with the config saved in it")
    run.add_argument("--max-steps", type=int, default=None, metavar="N",
                     help="stop after this many steps in total, with a checkpoint (benchmarks, "
                          "partial runs); the schedule still spans all epochs")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it is off anyway when stderr is not a terminal)")
    run.add_argument("--download-dir", default="data/pdb", metavar="DIR",
                     help="where the --pdb-ids are looked for and downloaded")
    run.add_argument("--base-url", default=RCSB_DOWNLOAD_URL, metavar="URL",
                     help="download from here")
    add_matmul_precision_argument(run)
    add_compilation_cache_argument(run)
    run.add_argument("--offline", action="store_true",
                     help="never download; fail if a --pdb-ids file is missing")
    run.add_argument("--print-config", action="store_true",
                     help="print the resulting config as JSON and exit")
    dist = parser.add_argument_group(
        "Processes (jax.distributed; docs/distributed.md)",
        "Every process runs this same command with its own --process-id. Without these flags a "
        "run under srun (SLURM, several tasks), mpirun or with JAX_COORDINATOR_ADDRESS set "
        "starts jax.distributed from that environment; otherwise it is one process using every "
        "local device.")
    dist.add_argument("--coordinator", default=None, metavar="ADDR:PORT",
                      help="address and port of process 0, which every process connects to")
    dist.add_argument("--num-processes", type=int, default=None, metavar="N",
                      help="number of processes in the run")
    dist.add_argument("--process-id", type=int, default=None, metavar="I",
                      help="this process's index, 0 to N-1 (0 writes logs, metrics and the model)")
    for title, options in _OVERRIDES:
        group = parser.add_argument_group(title)
        for flag, field, kind, text in options:
            help_text = f"{text} [{_preset_values(field)}]"
            if kind == "bool":
                group.add_argument(flag, dest=field, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            elif kind == "dirs":
                group.add_argument(flag, dest=field, type=str, action="append",
                                   default=argparse.SUPPRESS, help=help_text, metavar="DIR")
            else:
                group.add_argument(flag, dest=field, type=_TYPES.get(kind, kind),
                                   default=argparse.SUPPRESS, help=help_text,
                                   metavar=_METAVARS.get(kind, "DIR"))
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Preset (or, with --resume, the checkpoint's config) plus the options given."""
    from nanoaf2_jax.training.run_state import saved_config

    fields = {field for _, options in _OVERRIDES for _, field, _, _ in options}
    given = {k: v for k, v in vars(args).items() if k in fields}
    if "data_dir" in given and "pdb_ids" in given:
        raise ConfigError("--data-dir and --pdb-ids exclude each other: --data-dir trains on "
                          "every structure in the directory")
    base = get_preset(args.preset)
    if args.resume:
        base = saved_config(given.get("output_dir", base.output_dir))
    elif given.get("init_from") is not None:
        from nanoaf2_jax.training.checkpoint import init_checkpoint

        # The checkpoint's architecture and sampling; the recipe's losses.
        _, saved = init_checkpoint(given["init_from"])
        checkpoint_model = model_config.ModelConfig.from_dict(saved["model"])
        try:
            model = model_config.checkpoint_model_with(checkpoint_model, base.model)
        except ValueError as err:  # e.g. rollouts on a checkpoint whose pLDDT head reads no structure
            raise ConfigError(f"{given['init_from']}: the preset's training settings do not fit its "
                              f"model: {err}") from None
        base = dataclasses.replace(base, model=model)
    if "data_dir" in given:  # one directory stays a string (the configs saved before several)
        given["data_dir"] = given["data_dir"][0] if len(given["data_dir"]) == 1 else tuple(given["data_dir"])
    if "pdb_ids" in given:
        given["data_dir"] = None
    return base.override(**given)


def _start_processes(args):
    """jax.distributed for a multi-process run; then only process 0 logs below warnings."""
    from nanoaf2_jax.training.distributed import initialize

    if args.print_config:
        return
    if initialize(args.coordinator, args.num_processes, args.process_id):
        import jax

        if jax.process_index() != 0:
            logging.getLogger().setLevel(logging.WARNING)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.print_config:
        enable_compilation_cache(args.compilation_cache)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # "no TPU" notices

    from nanoaf2_jax.training.checkpoint import CheckpointError
    from nanoaf2_jax.training.trainer import RunOptions, train

    try:
        _start_processes(args)
        config = resolve_config(args)
        if args.print_config:
            print(config.to_json())
            return 0
        if args.max_steps is not None and args.max_steps < 1:
            raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
        evaluator = None
        if config.eval_every_epochs or config.eval_every_steps:
            from nanoaf2_jax.evaluation.during_training import TrainingEvaluator

            evaluator = TrainingEvaluator(config.eval_steps, seed=config.seed, eval_dir=config.eval_dir,
                                          max_proteins=config.eval_max_proteins, out_dir=config.output_dir)
        options = RunOptions(resume=args.resume, max_steps=args.max_steps,
                             progress=False if args.no_progress else None,
                             base_url=args.base_url, offline=args.offline,
                             download_dir=args.download_dir, evaluator=evaluator)
        set_matmul_precision(args.matmul_precision)
        train(config, options)
    except (ConfigError, TrainingError, CheckpointError, StructureError, DownloadError,
            OSError) as err:  # OSError: e.g. an unwritable --output-dir or a full disk
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted; continue from the last checkpoint with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
