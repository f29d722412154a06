"""A sequence-identity prior on confidence: what a model's samples have really scored, as a
function of the query's identity to the nearest sequence the model was trained on.

Why: a model trained on a few proteins memorises them. Its pLDDT head only ever saw proteins it
knows, so it says ~95 for any query, while on a protein unlike its training set the samples
score lDDT-Cα ~0.3 (docs/generalisation.md). The head cannot be taught the difference from the
structures alone (the `calibrate` recipe learned one average for both), but the identity to the
training set predicts it: the classic observation behind template- and homology-based
confidence, that accuracy follows identity to what the model has seen.

Identity here is over the longer of query and training sequence (data/sequence_identity.py,
`over='longer'`): measured on the default model, a 43-residue fragment of a 60-residue training
chain, 100% identical over its own length, is folded to lDDT-Cα 0.40, the whole chain to 0.97;
the memoriser reproduces whole training sequences, not their pieces.

The prior is fitted on evaluations of the model itself (`python -m nanoaf2_jax.fit_identity_prior`,
from `evaluate` outputs on proteins with known structures, which must not include the proteins
it is later judged on): each protein's identity and the mean lDDT-Cα its samples reached. The
fit is isotonic (non-decreasing in identity; pool-adjacent-violators), so it claims no more
shape than the data show. Applied, it caps each sample's mean pLDDT at 100 × the expected lDDT-Cα
for the query's identity, scaling the per-residue values by one factor, so their order along the
chain (which residues the head trusts more) is kept. A sample whose head already says less is
left as it is: the prior only lowers confidence, never raises it.

Written as <run directory>/identity_prior.json beside training_sequences.fasta; sample.py and
evaluate apply it when the checkpoint's run has one (`--identity-prior off` to see the head's
own values).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PRIOR_FILE = "identity_prior.json"


@dataclass(frozen=True)
class IdentityPrior:
    """Expected lDDT-Cα (0-1) at each knot of identity over the longer sequence (0-1), both
    non-decreasing; between knots linear, beyond the ends flat."""
    identity: tuple[float, ...]
    expected_lddt: tuple[float, ...]
    fitted_on: dict = field(default_factory=dict)  # provenance: files, proteins, their counts

    def __post_init__(self):
        x, y = np.asarray(self.identity, float), np.asarray(self.expected_lddt, float)
        if x.ndim != 1 or x.shape != y.shape or x.size == 0:
            raise ValueError(f"identity prior needs matching, non-empty knots; got {x.shape} and {y.shape}")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0):
            raise ValueError("identity prior knots must increase and their values never decrease")
        if np.any((x < 0) | (x > 1)) or np.any((y < 0) | (y > 1)):
            raise ValueError("identity prior knots and values must lie in [0, 1]")

    def expected(self, identity: float) -> float:
        return float(np.interp(identity, self.identity, self.expected_lddt))


def isotonic_fit(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-decreasing fit of y on x (pool-adjacent-violators), returned as knots:
    (mean x of each pooled block, its fitted value); equal x are pooled first."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("isotonic_fit needs as many y as x, at least one")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    blocks: list[list[float]] = []  # [sum x, sum y, count]
    for xi, yi in zip(x, y):
        if blocks and blocks[-1][0] / blocks[-1][2] == xi:
            blocks[-1] = [blocks[-1][0] + xi, blocks[-1][1] + yi, blocks[-1][2] + 1]
        else:
            blocks.append([xi, yi, 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
            sx, sy, n = blocks.pop()
            blocks[-1] = [blocks[-1][0] + sx, blocks[-1][1] + sy, blocks[-1][2] + n]
    knots_x = np.array([b[0] / b[2] for b in blocks])
    knots_y = np.array([b[1] / b[2] for b in blocks])
    return knots_x, knots_y


def fit_prior(identities: Sequence[float], lddts: Sequence[float], fitted_on: dict | None = None) -> IdentityPrior:
    """The prior from (identity, achieved lDDT-Cα) per protein, both 0-1."""
    kx, ky = isotonic_fit(identities, lddts)
    return IdentityPrior(tuple(float(v) for v in kx), tuple(float(np.clip(v, 0, 1)) for v in ky),
                         dict(fitted_on or {}))


def cap_plddt(plddt, expected_lddt: float) -> np.ndarray:
    """pLDDT [N, L] (0-1) with each sample's mean capped at expected_lddt by one factor per
    sample; samples already at or below it unchanged."""
    plddt = np.asarray(plddt)
    mean = plddt.mean(axis=-1, keepdims=True, dtype=np.float64)
    factor = expected_lddt / np.maximum(mean, 1e-12)
    return np.where(mean > expected_lddt, plddt * factor, plddt).astype(plddt.dtype)


def save_prior(prior: IdentityPrior, path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(prior), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_prior(path) -> IdentityPrior:
    """The prior in a JSON file; a malformed one is an error naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return IdentityPrior(tuple(data["identity"]), tuple(data["expected_lddt"]),
                             data.get("fitted_on", {}))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable identity prior ({err})") from None


def prior_for(checkpoint, choice: str | None) -> IdentityPrior | None:
    """The prior sampling applies: choice 'off' none, a path that file, None the checkpoint's
    run's identity_prior.json if it has one."""
    from ..training.training_sequences import run_file_of

    if choice == "off":
        return None
    path = Path(choice) if choice else run_file_of(checkpoint, PRIOR_FILE)
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"--identity-prior {path}: no such file")
    return load_prior(path)


def with_prior(result: dict, expected_lddt: float | None) -> dict:
    """A sampling result whose plddt is capped at expected_lddt (the head's own values kept as
    plddt_head); unchanged without a prior."""
    if expected_lddt is None:
        return result
    return {**result, "plddt_head": result["plddt"], "plddt": cap_plddt(result["plddt"], expected_lddt)}


def add_identity_prior_argument(parser) -> None:
    parser.add_argument(
        "--identity-prior", metavar="PATH|off",
        help="cap each sample's mean pLDDT at the lDDT-Cα the model really reaches at the query's "
             "identity to its training set (a JSON fitted by python -m "
             "nanoaf2_jax.fit_identity_prior; default: the checkpoint run's identity_prior.json "
             "when it has one; off: the pLDDT head's own values)")


def prior_identity(training_set, sequence: str) -> float:
    """The identity a prior is a function of: to the nearest training sequence, over the longer."""
    return training_set.nearest(sequence, over="longer")[0]


def identity_prior_of(args, training_set) -> IdentityPrior | None:
    """The prior a command's --checkpoint and --identity-prior select; an error when one is
    selected but the checkpoint carries no training sequences to measure identity against."""
    prior = prior_for(args.checkpoint, getattr(args, "identity_prior", None))
    if prior is not None and training_set is None:
        raise ValueError(f"an identity prior needs the training sequences of the checkpoint's run "
                         f"(training_sequences.fasta); {args.checkpoint} has none")
    return prior
