"""Model configuration: the reference's AlphaFold2(...) constructor arguments, and the
diffusion settings beyond the reference (EXTENSION_FIELDS), whose defaults compute exactly what
the reference computes; the `default` preset turns them on."""

import dataclasses
import json

ROTATION_NOISES = ("reference", "igso3")  # diffusion/se3.py's ROTATION_NOISES
ROTATION_UPDATES = ("rodrigues", "quaternion")  # model/denoiser.py's DiffusionModule
TRANSLATION_UPDATES = ("local", "global")
ROTATION_BASES = ("noisy", "ca_trace")
ROTATION_HEADS = ("output_proj", "local_geometry")
FAPE_ATOMS = ("ca", "backbone")  # model/losses.py
PLDDT_HEADS = ("single", "structure")  # model/pairformer.py PLDDTHead, model/confidence.py
PLDDT_TARGETS = ("ca_distance", "lddt_ca")  # model/losses.py

# Fields that are not the reference's AlphaFold2(...) arguments: what the reference does by
# default, so configs saved before they existed (and the parity fixtures) load unchanged.
EXTENSION_FIELDS = ("center_coords", "coord_scale", "rotation_noise", "rot_sigma_max",
                    "rotation_update", "translation_update", "rotation_base", "rotation_head", "fape_atoms",
                    "plddt_head", "plddt_target", "sampling_eta", "diffusion_multiplicity",
                    "plddt_decoys", "train_t_exponent", "peptide_bond_weight",
                    "peptide_bond_max_t", "peptide_bond_start", "distogram_weight",
                    "plddt_rollout_steps", "self_conditioning")

# Fields that shape only the training losses: neither the parameter tree nor what sampling
# computes. A fine-tuning run (TrainConfig.init_from) takes its recipe's values of these and the
# checkpoint's of every other field (checkpoint_model_with).
TRAINING_ONLY_FIELDS = ("fape_weight", "trans_weight", "rot_weight", "plddt_weight", "plddt_target",
                        "diffusion_multiplicity", "train_t_exponent", "peptide_bond_weight",
                        "peptide_bond_max_t", "peptide_bond_start", "plddt_rollout_steps",
                        "plddt_decoys")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    c_s: int = 256
    c_z: int = 64
    c_atom: int = 256
    num_pairformer_blocks: int = 4
    pairformer_heads: int = 4
    num_denoise_blocks: int = 4
    denoise_heads: int = 8
    num_plddt_bins: int = 50
    fape_weight: float = 0.1
    trans_weight: float = 1.0
    rot_weight: float = 0.5
    plddt_weight: float = 0.01
    # Diffuse translations centred on the CA centroid of each structure (real residues only);
    # sampled backbones are then centred too. The reference: raw PDB coordinates.
    center_coords: bool = False
    # Translations are diffused (and predicted, and the translation loss computed) in Å times
    # this; FAPE and the pLDDT targets stay in Å. Sampling starts from N(0, I) in this space and
    # divides by it at the end. The reference: 1.0 (Å, against an N(0, 1 Å) prior).
    coord_scale: float = 1.0
    # "reference": rotation noise angle |N(0,1)·σ(t)|, sampling starts from that at σ_max;
    # "igso3": exact IGSO3(σ(t)) noise, sampling starts from Haar-uniform rotations.
    rotation_noise: str = "reference"
    # σ(t) = t · rot_sigma_max, the rotation noise schedule.
    rot_sigma_max: float = 1.5
    # How the denoiser's output becomes its rotation update: "rodrigues" (the reference's
    # axis-angle map, whose zero-initialised weights get exactly zero gradient, so predicted
    # rotations never move) or "quaternion" (AlphaFold 2's (1, b, c, d)/‖·‖). Same parameters.
    rotation_update: str = "rodrigues"
    # The frame the denoiser's translation update is expressed in: "local" (the reference: the
    # noisy input frame, whose rotation is near-uniform at high t) or "global".
    translation_update: str = "local"
    # What the rotation update composes onto: "noisy" (the reference: the noisy input rotation)
    # or "ca_trace" (the frame of the predicted CA(i-1), CA(i), CA(i+1)).
    rotation_base: str = "noisy"
    # Where the rotation update comes from: "output_proj" (the reference: the shared output
    # layer) or "local_geometry" (an MLP of the detached denoiser features and the CA
    # neighbours in the base frame; extra parameters the reference's state_dict cannot hold).
    rotation_head: str = "output_proj"
    # The atoms FAPE scores in every frame: "ca" (the reference) or "backbone" (N, CA, C).
    fape_atoms: str = "ca"
    # The pLDDT head: "single" (the reference: the trunk's single representation only, so one
    # pLDDT per sequence) or "structure" (also the predicted structure's CA distances beside the
    # pair representation, inputs detached: one pLDDT per sample; extra parameters the
    # reference's state_dict cannot hold).
    plddt_head: str = "single"
    # What the pLDDT head is trained on: "ca_distance" (the reference: clamp(1 - |ΔCA|/15) of a
    # one-step denoised CA, absolute positions) or "lddt_ca" (that prediction's real lDDT-Cα).
    plddt_target: str = "ca_distance"
    # The translation reverse step when sampling: None (the reference: a clamped, in effect zero,
    # noise term) or η of DDIM(η) with the correct posterior variance (0: deterministic, 1: DDPM).
    sampling_eta: float | None = None
    # Noise samples (t and frame noise) per trunk pass in training, each denoised and scored on
    # its own (Boltz's and AlphaFold 3's diffusion multiplicity). The trunk is ~93% of a step's
    # cost at L = 56, so more denoiser samples per trunk pass are cheap. The reference: 1.
    diffusion_multiplicity: int = 1
    # Also train the pLDDT head on decoys: each row's sequence with a random fraction of its
    # residues replaced (uniform over the 20 amino acids), denoised in one step from pure noise
    # (t = 1, as sampling starts) by the detached model and scored against the row's native
    # structure. Trained on eight proteins, every one-step prediction of a training sequence is
    # near-perfect late in the run; the decoys were to show the head what the model makes of
    # sequences it has not learned. Head only: the trunk and the structure never see these rows'
    # losses. Measured: the head still cannot tell an unseen protein from a training one
    # (docs/accuracy.md), so it is off in every preset.
    plddt_decoys: bool = False
    # Training draws t = u^k with u ~ U[0, 1): k > 1 puts more noise samples at the small t of
    # the last reverse steps, whose one-step prediction is the sample (P(t < 0.1) = 0.1^(1/k)).
    # The reference: 1 (uniform t).
    train_t_exponent: float = 1.0
    # Weight of the peptide-bond loss (losses.peptide_bond_loss: mean |C(i)-N(i+1) - 1.329 Å| of
    # the one-step prediction, in Å). The reference: 0 (no such term).
    peptide_bond_weight: float = 0.0
    # The peptide-bond loss scores only the noise samples with t below this (the others count 0
    # in its mean): the last reverse steps, whose one-step prediction becomes the sample, start
    # near the native, where the bond term refines rather than fights the fold. 1: every t.
    peptide_bond_max_t: float = 1.0
    # The share of the run's optimiser steps after which the peptide-bond loss is on (0: from
    # the first step). Measured: from the start it slows the fold (100 epochs: CA-RMSD 1.10 Å
    # against 0.51 Å at weight 0.1); on a model that folds it makes the bonds exact.
    peptide_bond_start: float = 0.0
    # Weight of AlphaFold 2's distogram loss (suppl. 1.9.8): a linear head on the symmetrised pair
    # representation predicts the binned CB-CB distance of every residue pair (64 bins, 2-22 Å),
    # scored by cross-entropy. It trains the trunk on every pair's geometry directly, not only
    # through what the denoiser makes of it. 0: no head, no parameters (the reference).
    distogram_weight: float = 0.0
    # Train the pLDDT head on the structures sampling gives, not on one-step predictions: K
    # reverse steps from pure noise (t = 1) by the detached model, the head scored on the last
    # one's lDDT-Cα (AlphaFold 3's mini-rollout, suppl. 4.1). A one-step prediction from a noisy
    # native at small t is near the native whether or not the model knows the fold, so a head
    # trained on them says "confident" for any sequence. 0: the one-step prediction (the
    # reference's target structure).
    plddt_rollout_steps: int = 0
    # Self-conditioning (Chen et al. 2022, "Analog Bits"; FrameDiff and FrameFlow use it): the
    # denoiser also reads its own previous estimate of the clean structure, as a per-head
    # attention bias from the binned CA-CA distances of that estimate (AlphaFold 2's recycling
    # distogram bins, 3.25-20.75 Å). Sampling passes each reverse step's prediction to the next;
    # training passes, for half of the noise samples, a detached first prediction from the same
    # input, and nothing for the others. The bias layer starts at zero, so an untrained model
    # computes what it would without. False: no such input, no parameters (the reference).
    self_conditioning: bool = False

    def __post_init__(self):
        for name, allowed in (("rotation_update", ROTATION_UPDATES), ("rotation_noise", ROTATION_NOISES),
                              ("translation_update", TRANSLATION_UPDATES),
                              ("rotation_base", ROTATION_BASES), ("rotation_head", ROTATION_HEADS),
                              ("fape_atoms", FAPE_ATOMS),
                              ("plddt_head", PLDDT_HEADS), ("plddt_target", PLDDT_TARGETS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.sampling_eta is not None and not 0 <= self.sampling_eta <= 1:
            raise ValueError(f"sampling_eta must be None or in [0, 1], got {self.sampling_eta!r}")
        if not (isinstance(self.diffusion_multiplicity, int) and self.diffusion_multiplicity >= 1):
            raise ValueError(f"diffusion_multiplicity must be an integer >= 1, got {self.diffusion_multiplicity!r}")
        if self.plddt_decoys and self.plddt_head != "structure":
            raise ValueError("plddt_decoys needs plddt_head='structure' (a head that reads the "
                             "structure it judges); the sequence-only head cannot tell a decoy apart")
        if not self.train_t_exponent > 0:
            raise ValueError(f"train_t_exponent must be positive, got {self.train_t_exponent!r}")
        if not self.peptide_bond_weight >= 0:
            raise ValueError(f"peptide_bond_weight must be >= 0, got {self.peptide_bond_weight!r}")
        if not 0 < self.peptide_bond_max_t <= 1:
            raise ValueError(f"peptide_bond_max_t must be in (0, 1], got {self.peptide_bond_max_t!r}")
        if not 0 <= self.peptide_bond_start < 1:
            raise ValueError(f"peptide_bond_start must be in [0, 1), got {self.peptide_bond_start!r}")
        if not self.distogram_weight >= 0:
            raise ValueError(f"distogram_weight must be >= 0, got {self.distogram_weight!r}")
        if not (isinstance(self.plddt_rollout_steps, int) and self.plddt_rollout_steps >= 0):
            raise ValueError(f"plddt_rollout_steps must be an integer >= 0, got {self.plddt_rollout_steps!r}")
        if self.plddt_rollout_steps and self.plddt_head != "structure":
            raise ValueError("plddt_rollout_steps needs plddt_head='structure' (a head that reads the "
                             "structure it judges)")
        if not self.coord_scale > 0:
            raise ValueError(f"coord_scale must be positive, got {self.coord_scale!r}")
        if not self.rot_sigma_max > 0:
            raise ValueError(f"rot_sigma_max must be positive, got {self.rot_sigma_max!r}")
        for name, dim, heads in (
            ("c_z", self.c_z, self.pairformer_heads),
            ("c_s", self.c_s, self.pairformer_heads),
            ("c_atom", self.c_atom, self.denoise_heads),
        ):
            if dim % heads:
                raise ValueError(f"{name}={dim} is not divisible by its number of heads ({heads})")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def reference_kwargs(self) -> dict:
        """The reference's AlphaFold2(...) constructor arguments (no extension fields)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXTENSION_FIELDS}


DEFAULT_LEVERS = ModelConfig(center_coords=True, coord_scale=0.1, rotation_noise="igso3",
                             rot_sigma_max=2.0, rotation_update="quaternion",
                             translation_update="global", rotation_base="ca_trace", rot_weight=0.05,
                             plddt_head="structure", plddt_target="lddt_ca", diffusion_multiplicity=8,
                             peptide_bond_weight=0.1, peptide_bond_start=0.8)

# The architecture of each training preset in the repository's configs.py, by the preset's name.
# A bare state_dict (.pt/.npz) carries no config, so loading one for inference takes its model
# from here (`--preset NAME`); the package itself never imports configs.py.
# The many-chain recipe's model (configs.py `chains`): default's diffusion, plus AlphaFold 2's
# distogram loss (weight 0.3, as in AlphaFold 2 beside its FAPE of the same scale as ours) and a
# pLDDT head trained on 10-step rollouts, the structures sampling gives.
CHAINS_LEVERS = dataclasses.replace(DEFAULT_LEVERS, distogram_weight=0.3, plddt_rollout_steps=10)

MODEL_PRESETS: dict[str, ModelConfig] = {
    "reference": ModelConfig(),
    # Translations centred and in units of 10 Å, exact IGSO3 rotation noise to σ = 2, the
    # translation update in the global frame (at 100 epochs: one-shot CA-RMSD at t = 0.02 of
    # 0.86 Å against 3.60 Å with the reference's local frame), a rotation update that learns
    # (AlphaFold 2's quaternion update on the CA-trace frame) with a rotation loss weight of
    # 0.05 (at 0.5 its gradients crowd out the translations': 100-epoch CA-RMSD 1.05 Å at 0.05),
    # a pLDDT head that reads each sample's CA distances, trained on lDDT-Cα, and 8 noise samples
    # per trunk pass (100 epochs: CA-RMSD 0.51 Å against 1.05 Å with one, for 1.21× the step
    # time), and for the last 20% of the run a peptide-bond term (weight 0.1) that makes the
    # C(i)-N(i+1) bonds exact. docs/accuracy.md has the ablations.
    "default": DEFAULT_LEVERS,
    "chains": CHAINS_LEVERS,
    # The pLDDT head of a trained `default` model fine-tuned alone (configs.py `calibrate`):
    # default's architecture and sampling; its head trained on 10-step rollouts, one trunk sample
    # per step. (A run takes the model of its --init-from checkpoint and only these training
    # fields from here; a state_dict it exports samples as `default`'s would.)
    "calibrate": dataclasses.replace(DEFAULT_LEVERS, plddt_rollout_steps=10, diffusion_multiplicity=1),
    # The `chains` model's pLDDT head fine-tuned alone on whole chains (configs.py
    # `chains_calibrate`): chains' architecture, one trunk sample per step.
    "chains_calibrate": dataclasses.replace(CHAINS_LEVERS, diffusion_multiplicity=1),
    # Small enough that a CPU step takes milliseconds: smoke runs and tests.
    "tiny": dataclasses.replace(DEFAULT_LEVERS, c_s=32, c_z=16, c_atom=32, num_pairformer_blocks=1,
                                num_denoise_blocks=1, denoise_heads=4, diffusion_multiplicity=1),
}


def checkpoint_model_with(checkpoint: ModelConfig, recipe: ModelConfig) -> ModelConfig:
    """A trained checkpoint's model with the recipe's TRAINING_ONLY_FIELDS."""
    return dataclasses.replace(checkpoint, **{f: getattr(recipe, f) for f in TRAINING_ONLY_FIELDS})


def model_preset(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}") from None
