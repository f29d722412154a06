"""Evaluation while training: every `eval_every_epochs` the training loop hands the current
weights here; each training protein (and up to `eval_max_proteins` from `eval_dir`) is sampled
once with `eval_steps` reverse steps and scored, so a run that is not learning shows while it
runs, not after. The numbers go into metrics.jsonl (and TensorBoard) as `eval/...` keys, and
`training_curves.png` in the run directory plots the loss and the CA-RMSD against the step, and
with held-out chains their mean lDDT-Cα, TM-score and Q3 (the learning curve).

The loop (training/trainer.py) cannot import sampling (inference/ sits above training/), so
train.py builds a TrainingEvaluator and passes it in RunOptions.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ..data.structures import Protein, load_dataset
from ..inference.predict import bucket_length, predict_codes
from ..inference.records import safe_name
from .contacts import top_long_range_precision_of_map
from .scoring import score_prediction

_LOG = logging.getLogger("nanoaf2_jax.train")
CURVES_FILE = "training_curves.png"
# Scores per protein in the record, and their means per protein set. Q3 and long-range contact
# precision say whether a fold (not only a shape near the mean) is being learned; the precision
# is left out for a protein without native long-range contacts (NaN). The radius of gyration
# over the native's shows a model sampling crop-sized blobs; with a distogram head, the trunk's
# own contact precision shows what it knows beside what the structure shows.
_KEYS = ("ca_rmsd", "tm_score", "lddt", "backbone_rmsd", "q3", "long_range_precision", "rg_ratio",
         "trunk_long_range_precision")
_MAY_BE_NAN = ("long_range_precision", "trunk_long_range_precision")


class TrainingEvaluator:
    """evaluator(params, model_config, train_proteins, step, epoch) -> the record's eval keys:
    eval/<set>/<protein>/<score> and eval/<set>/<score>_mean for set train (and held_out)."""

    def __init__(self, steps: int, seed: int = 0, eval_dir: str | None = None, max_proteins: int = 4,
                 out_dir: str | Path | None = None, log=_LOG):
        if steps < 1:
            raise ValueError(f"eval_steps must be at least 1, got {steps}")
        self.steps, self.seed, self.out_dir, self.log = steps, seed, out_dir, log
        self.held_out: list[Protein] = []
        if eval_dir is not None:
            self.held_out = load_dataset(eval_dir, logger=log)[:max_proteins]

    def __call__(self, params, model_config, train_proteins, step: int, epoch: int) -> dict:
        record = {}
        for set_name, proteins in (("train", train_proteins), ("held_out", self.held_out)):
            per_score = {k: [] for k in _KEYS}
            for index, protein in enumerate(proteins):
                # Padded to its length bucket: thousands of chain lengths, a few compilations.
                result = predict_codes(params, model_config, protein.sequence, (self.seed, index), 1, self.steps,
                                       pad_to=bucket_length(protein.length))
                native = (protein.coords_N, protein.coords_CA, protein.coords_C)
                pred = (result["coords_N"][0], result["coords_CA"][0], result["coords_C"][0])
                scores = score_prediction(pred[1], protein.coords_CA, pred, native, protein.residue_index)
                if "contact_probability" in result:
                    scores["trunk_long_range_precision"] = top_long_range_precision_of_map(
                        result["contact_probability"], protein.coords_CA)
                for key in _KEYS:
                    if key in scores and (key not in _MAY_BE_NAN or math.isfinite(scores[key])):
                        record[f"eval/{set_name}/{safe_name(protein.name, f'protein{index}')}/{key}"] = float(scores[key])
                        per_score[key].append(float(scores[key]))
            for key, values in per_score.items():
                if values:
                    record[f"eval/{set_name}/{key}_mean"] = float(np.mean(values))
        if "eval/train/ca_rmsd_mean" in record:
            held = record.get("eval/held_out/ca_rmsd_mean")
            self.log.info("eval at step %d (epoch %d, %d steps/sample): train CA-RMSD %.2f Å, TM %.3f, "
                          "N-CA-C RMSD %.2f Å, Q3 %.2f%s", step, epoch, self.steps, record["eval/train/ca_rmsd_mean"],
                          record["eval/train/tm_score_mean"], record["eval/train/backbone_rmsd_mean"],
                          record["eval/train/q3_mean"],
                          f"; held-out CA-RMSD {held:.2f} Å" if held is not None else "")
        return record

    def plot(self, metrics_path: Path):
        """training_curves.png beside metrics.jsonl: loss and mean CA-RMSD against the step."""
        if self.out_dir is None or not Path(metrics_path).exists():
            return
        from .plots import plot_training_curves

        records = []
        for line in Path(metrics_path).read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a half-written last line of an interrupted run
        # The mean over each log window: the per-step loss swings with the sampled t.
        loss = [(r["step"], r.get("loss_mean", r["loss"])) for r in records
                if "loss" in r and math.isfinite(r.get("loss_mean", r["loss"]))]
        rmsd = {s: [(r["step"], r[f"eval/{s}/ca_rmsd_mean"]) for r in records if f"eval/{s}/ca_rmsd_mean" in r]
                for s in ("train", "held_out")}
        fold = {f"held-out {label}": [(r["step"], r[f"eval/held_out/{key}_mean"]) for r in records
                                      if f"eval/held_out/{key}_mean" in r]
                for key, label in (("lddt", "lDDT-Cα"), ("tm_score", "TM-score"), ("q3", "Q3"))}
        plot_training_curves(Path(self.out_dir) / CURVES_FILE, loss, rmsd,
                             fold_scores={k: v for k, v in fold.items() if v} or None)
