"""The training objective, the optimiser and one jitted train step.

`loss_fn(params, batch, noise)` is a pure function of explicit noise, so the reference's
recorded draws replay exactly; `draw_train_noise(key, ...)` draws the same distributions
(t ~ U[0,1) per structure; IGSO3 and Gaussian normals per residue).
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..model.model_config import ModelConfig
from ..diffusion.reverse import reverse_diffusion
from ..diffusion.se3 import (FrameNoise, draw_frame_noise, from_diffusion_space, se3_forward_marginal,
                             to_diffusion_space)
from ..model.distogram import distogram_loss
from ..model.losses import fape, frame_loss, peptide_bond_loss, peptide_bond_mask, plddt_loss
from ..model.alphafold2 import AlphaFold2
from ..geometry.residue_constants import AA_VOCAB
from ..geometry.rigid import Rigid, backbone_from_frames, frames_from_backbone
from .adamw import adamw_torch
from .mixed_precision import cast_floating
from .trainable import detach_frozen, keep_frozen


NUM_AMINO_ACIDS = len(AA_VOCAB)


class DecoyNoise(NamedTuple):
    """The draws of one pLDDT decoy per batch row (ModelConfig.plddt_decoys)."""

    fraction: jnp.ndarray  # [B]        share of residues replaced, U[0, 1)
    replace_u: jnp.ndarray  # [B, L]    residue i is replaced where replace_u < fraction
    residues: jnp.ndarray  # [B, L] int  the replacements, uniform over the 20 amino acids
    frames: FrameNoise  # [B, L]        the t = 1 noise the decoy is denoised from


class RolloutNoise(NamedTuple):
    """The draws of one reverse-diffusion rollout per batch row (ModelConfig.plddt_rollout_steps):
    what sampling.SampleNoise holds for one sample."""

    start: FrameNoise  # [B, L]            the t = 1 frames (rotation normals, translation normal)
    trans_steps: jnp.ndarray  # [K - 1, B, L, 3]  one translation normal per step with t_next > 0


class TrainNoise(NamedTuple):
    t: jnp.ndarray  # [B], or [B, M] with diffusion multiplicity M > 1
    frames: FrameNoise  # [B, L] ([B, M, L] with M > 1), [..., 3], [..., 3]
    decoy: DecoyNoise | None = None
    rollout: RolloutNoise | None = None
    # ModelConfig.self_conditioning: U[0, 1) per noise sample (t's shape); below 0.5 the
    # denoiser is given its own detached first prediction.
    self_condition: jnp.ndarray | None = None


def draw_train_noise(key, batch_size: int, length: int, dtype=jnp.float32, multiplicity: int = 1,
                     decoys: bool = False, rollout_steps: int = 0, self_conditioning: bool = False) -> TrainNoise:
    """multiplicity 1 and no decoys: the draws the reference's distributions make (and the
    same values as before either field existed). Per-row noise keeps the batch axis first, so
    splitting the batch (devices, micro-batches) splits its noise with it."""
    k_t, k_frames = jax.random.split(key)
    rows = (batch_size,) if multiplicity == 1 else (batch_size, multiplicity)
    decoy = None
    if decoys:
        k = jax.random.split(jax.random.fold_in(key, 1), 4)
        decoy = DecoyNoise(jax.random.uniform(k[0], (batch_size,), dtype),
                           jax.random.uniform(k[1], (batch_size, length), dtype),
                           jax.random.randint(k[2], (batch_size, length), 0, NUM_AMINO_ACIDS),
                           draw_frame_noise(k[3], (batch_size, length), dtype))
    rollout = None
    if rollout_steps:
        k = jax.random.split(jax.random.fold_in(key, 2))
        rollout = RolloutNoise(draw_frame_noise(k[0], (batch_size, length), dtype),
                               jax.random.normal(k[1], (rollout_steps - 1, batch_size, length, 3), dtype))
    self_condition = None
    if self_conditioning:
        self_condition = jax.random.uniform(jax.random.fold_in(key, 3), rows, dtype)
    return TrainNoise(jax.random.uniform(k_t, rows, dtype), draw_frame_noise(k_frames, (*rows, length), dtype),
                      decoy, rollout, self_condition)


def draw_train_noise_for(config: ModelConfig, key, batch_size: int, length: int, dtype=jnp.float32) -> TrainNoise:
    """draw_train_noise with the shapes `config` asks for (multiplicity, decoys, rollout)."""
    return draw_train_noise(key, batch_size, length, dtype, config.diffusion_multiplicity, config.plddt_decoys,
                            config.plddt_rollout_steps, config.self_conditioning)


def residue_index_of(batch):
    seq = batch["sequence"]
    if "residue_index" in batch:
        return batch["residue_index"]
    # The reference numbers residues 0..L-1 whatever their PDB numbering.
    return jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape)


class LossTotals(NamedTuple):
    """The loss denominators of a whole batch: its real residues, residue pairs and peptide
    bonds."""

    residues: jnp.ndarray
    pairs: jnp.ndarray
    bonds: jnp.ndarray


def loss_totals(mask, residue_index=None) -> LossTotals:
    """Denominators of the masked means over `mask` [B, L] (those of losses.py's _masked_mean)."""
    m = mask.astype(jnp.float32)
    n = jnp.sum(m, axis=-1)
    bonds = peptide_bond_mask(mask, residue_index).astype(jnp.float32)
    return LossTotals(jnp.sum(m), jnp.sum(n * n), jnp.sum(bonds))


def loss_fn(params, batch, noise: TrainNoise, config: ModelConfig, attention_mask: bool = False,
            totals: LossTotals | None = None, compute_dtype=None, progress=None):
    """Total loss and its components for one batch.

    batch: sequence [B, L] int, mask [B, L] bool, coords_N/CA/C [B, L, 3].
    attention_mask: exclude padding from attention and triangular updates (our default recipe);
    False computes exactly the reference (padding only excluded from the losses).
    totals: the denominators of a larger batch this one is a part of (gradient accumulation:
    the parts' losses then add up to the whole batch's); None: this batch's own.
    compute_dtype: bfloat16 runs the model in bfloat16 on a cast copy of the float32 params
    (mixed_precision.py); the losses stay float32. None: the params' dtype.
    progress: the share of the run's optimiser steps done at this one (a traced scalar; the
    trainer passes (step + 0.5) / total_steps), for the terms that start late
    (peptide_bond_start); None: outside a scheduled run, every term is on.
    """
    model = AlphaFold2(config)
    params = cast_floating(params, compute_dtype)
    M = config.diffusion_multiplicity
    dtype = batch["coords_CA"].dtype
    if totals is None:
        res_total = pair_total = bond_total = None
    else:
        res_total, pair_total, bond_total = (x.astype(dtype) for x in totals)
    row_res_total, row_pair_total = res_total, pair_total  # per trunk row (distogram, rollout)
    mask = batch["mask"]
    model_mask = mask if attention_mask else None
    true_frames = frames_from_backbone(batch["coords_N"], batch["coords_CA"], batch["coords_C"])
    # Diffusion space: centred on the CA centroid and scaled by coord_scale where the config says
    # so (the reference: Å as read). The denoiser and the translation/rotation loss work there;
    # FAPE (clamp 10 Å) and the pLDDT targets (15 Å) compare Å, centred the same way.
    shift = config.center_coords or config.coord_scale != 1.0
    diff_frames = (to_diffusion_space(true_frames, mask, config.center_coords, config.coord_scale)
                   if shift else true_frames)
    true_a = to_diffusion_space(true_frames, mask, config.center_coords, 1.0) if shift else true_frames
    true_ca = true_a.trans if shift else batch["coords_CA"]

    def to_angstrom(frames):
        return from_diffusion_space(frames, config.coord_scale) if shift else frames

    # Diffusion multiplicity M: row b's M noise samples become rows b·M, ..., b·M + M - 1 of
    # everything after the trunk, which runs once per row.
    t, frame_noise, self_condition = noise.t, noise.frames, noise.self_condition
    if config.train_t_exponent != 1.0:  # t = u^k: more samples at the small t of the last reverse steps
        t = t ** config.train_t_exponent
    if M > 1:
        t = t.reshape(-1)
        self_condition = None if self_condition is None else self_condition.reshape(-1)
        frame_noise = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), frame_noise)
        res_total, pair_total, bond_total = (None if x is None else M * x
                                             for x in (res_total, pair_total, bond_total))

    def rep(tree):
        return tree if M == 1 else jax.tree_util.tree_map(lambda x: jnp.repeat(x, M, axis=0), tree)

    def run(m):
        single, pair = m.trunk(batch["sequence"], residue_index_of(batch), model_mask)
        noisy = se3_forward_marginal(rep(diff_frames), t, frame_noise, config.rot_sigma_max,
                                     config.rotation_noise)
        # The pair-bias logits once per row, repeated for its M samples (M = 1: what
        # diffusion_module(noisy, t, single, pair) computes, operation for operation).
        cond = m.condition(single, pair, model_mask)
        previous = ()
        if config.self_conditioning:
            # Half of the samples see a detached first prediction from the same input, as the
            # sampler's steps see the previous step's (FrameDiff's, FrameFlow's recipe).
            first = jax.lax.stop_gradient(m.denoise(noisy, t, rep(cond)).trans)
            previous = (first, (self_condition < 0.5).astype(first.dtype))
        pred = m.denoise(noisy, t, rep(cond), *previous)
        pred_a = to_angstrom(pred)
        disto = m.distogram_logits(pair) if config.distogram_weight > 0 else None
        if config.plddt_rollout_steps:
            return pred, pred_a, None, disto, (single, pair, cond)
        # The structure head judges this one-step prediction: across t it sees structures of
        # every quality, each scored against its own lDDT-Cα.
        if config.plddt_head == "structure":  # each row's M structures; pair projected once per row
            return pred, pred_a, m.plddt_logits(single, pair, pred_a.trans, mask), disto, None
        return pred, pred_a, m.plddt_logits(rep(single)), disto, None

    pred, pred_a, logits, disto, trunk_out = nn_apply(model, params, run)
    extra = {}
    if config.plddt_rollout_steps:
        single, pair, cond = jax.lax.stop_gradient(trunk_out)
        roll_ca = _rollout_ca(model, jax.lax.stop_gradient(params), cond, noise.rollout, config, to_angstrom)
        logits = nn_apply(model, params, lambda m: m.plddt_logits(single, pair, roll_ca, mask))
        plddt_l = plddt_loss(logits.astype(roll_ca.dtype), roll_ca, true_ca, mask, config.plddt_target,
                             row_res_total)
    logits = logits.astype(pred.trans.dtype)  # bfloat16 under mixed precision; losses in float32
    mask_m = rep(mask)
    trans, rot = frame_loss(pred, rep(diff_frames), mask_m, res_total)
    pred_n, pred_ca, pred_c = backbone_from_frames(pred_a)
    if config.fape_atoms == "backbone":
        # N, CA, C of both sides placed ideally in their frames: the model can only build ideal
        # geometry, so the native frames' ideal atoms are the target it can reach.
        pred_pts = jnp.concatenate(backbone_from_frames(pred_a), axis=1)
        true_pts = rep(jnp.concatenate(backbone_from_frames(true_a), axis=1))
        fape_l = fape(pred_a, rep(true_a), pred_pts, true_pts, mask_m, point_mask=jnp.tile(mask_m, (1, 3)),
                      total=None if pair_total is None else 3 * pair_total)
    else:
        fape_l = fape(pred_a, rep(true_a), pred_ca, rep(true_ca), mask_m, total=pair_total)
    if not config.plddt_rollout_steps:
        plddt_l = plddt_loss(logits, pred_ca, rep(true_ca), mask_m, config.plddt_target, res_total)
    if disto is not None:
        extra["distogram_loss"] = distogram_loss(disto, *backbone_from_frames(true_a), mask, row_pair_total)
    if config.peptide_bond_weight > 0:
        bonds = rep(peptide_bond_mask(mask, batch.get("residue_index")))
        low_t = None if config.peptide_bond_max_t >= 1 else (t < config.peptide_bond_max_t)
        extra["peptide_bond_loss"] = peptide_bond_loss(pred_c, pred_n, bonds, bond_total, low_t)
    if config.plddt_decoys:
        decoy_l = _decoy_plddt_loss(model, params, batch, noise.decoy, diff_frames, true_ca, config,
                                    model_mask, to_angstrom,
                                    None if totals is None else totals.residues.astype(dtype))
        extra["plddt_decoy_loss"] = decoy_l
        plddt_l = 0.5 * (plddt_l + decoy_l)
    total = (
        config.trans_weight * trans + config.rot_weight * rot + config.fape_weight * fape_l + config.plddt_weight * plddt_l
    )
    if config.peptide_bond_weight > 0:
        weight = config.peptide_bond_weight
        if progress is not None and config.peptide_bond_start > 0:
            weight = jnp.where(progress >= config.peptide_bond_start, weight, 0.0).astype(total.dtype)
        total = total + weight * extra["peptide_bond_loss"]
    if disto is not None:
        total = total + config.distogram_weight * extra["distogram_loss"]
    metrics = {"loss": total, "fape_loss": fape_l, "trans_loss": trans, "rot_loss": rot, "plddt_loss": plddt_l,
               **extra}
    return total, metrics


def _rollout_ca(model, params, cond, noise: RolloutNoise, config: ModelConfig, to_angstrom):
    """CA atoms (Å) [B, L, 3] of K reverse steps from t = 1, as sampling.sample takes them (the
    same start, steps and last one-step prediction), for each row's conditioning `cond`."""
    dtype = noise.trans_steps.dtype
    B = noise.start.trans.shape[0]

    def denoise(frames, t, *previous):
        return nn_apply(model, params, lambda m: m.denoise(frames, jnp.full((B,), t, dtype), cond, *previous))

    frames = reverse_diffusion(denoise, noise.start.rot_omega, noise.start.rot_axis, noise.start.trans,
                               noise.trans_steps, config.rotation_noise, config.rot_sigma_max,
                               config.sampling_eta, config.self_conditioning)
    return to_angstrom(frames).trans


def _decoy_plddt_loss(model, params, batch, decoy: DecoyNoise, diff_frames: Rigid, true_ca, config,
                      model_mask, to_angstrom, res_total):
    """The pLDDT head's loss on one decoy per row (ModelConfig.plddt_decoys): the row's
    sequence with a random share of its residues replaced, denoised in one step from t = 1 by
    the model with its parameters detached, and scored against the row's native CA atoms.

    At t = 1 the noisy input carries (next to) nothing of the native, as in sampling, so how
    close the decoy comes depends only on what the model makes of the sequence. The hope was
    that the head would learn to tell learned sequences from unlearned ones; measured, it does
    not (docs/accuracy.md), which is why no preset turns this on."""
    mask = batch["mask"]
    replaced = (decoy.replace_u < decoy.fraction[:, None]) & mask.astype(bool)
    sequence = jnp.where(replaced, decoy.residues.astype(batch["sequence"].dtype), batch["sequence"])
    t_one = jnp.ones(decoy.fraction.shape, decoy.fraction.dtype)

    def run(m):
        single, pair = m.trunk(sequence, residue_index_of(batch), model_mask)
        noisy = se3_forward_marginal(diff_frames, t_one, decoy.frames, config.rot_sigma_max, config.rotation_noise)
        return single, pair, to_angstrom(m.diffusion_module(noisy, t_one, single, pair, model_mask))

    single, pair, pred_a = nn_apply(model, jax.lax.stop_gradient(params), run)
    logits = nn_apply(model, params, lambda m: m.plddt_logits(single, pair, pred_a.trans, mask))
    _, pred_ca, _ = backbone_from_frames(pred_a)
    return plddt_loss(logits.astype(pred_ca.dtype), pred_ca, true_ca, mask, config.plddt_target, res_total)


def frozen_loss_fn(trainable: str):
    """loss_fn with the frozen parameters detached inside it: their gradients are zero and
    their backward pass is not computed."""
    if trainable == "all":
        return loss_fn
    return lambda params, *args: loss_fn(detach_frozen(params, trainable), *args)


def nn_apply(model, params, fn, *args):
    """Run `fn(bound_model, *args)` with `params` bound: lets one apply call use several methods."""
    return model.apply({"params": params}, *args, method=fn)


# ---------------------------------------------------------------------------------------------
# Optimiser
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 3e-3
    weight_decay: float = 0.01  # torch.optim.AdamW's default, which the reference relies on
    warmup_steps: int = 10
    total_steps: int = 8000  # steps of the cosine schedule (the reference: len(loader) × epochs)
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def lr_schedule(cfg: OptimConfig):
    """Linear warmup from 0, then cosine to 0 at total_steps (the reference's LambdaLR)."""
    warmup = cfg.warmup_steps
    decay_steps = max(1, cfg.total_steps - warmup)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32 if not jax.config.jax_enable_x64 else jnp.float64)
        warm = step / max(1, warmup)
        progress = (step - warmup) / decay_steps
        cosine = 0.5 * (1 + jnp.cos(math.pi * progress))
        return cfg.learning_rate * jnp.where(step < warmup, warm, cosine)

    return schedule


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (‖g‖ + 1e-6)).

    optax.clip_by_global_norm omits the 1e-6; we keep it so optimiser steps match the reference.
    """

    def update(updates, state, params=None):
        norm = optax.global_norm(updates)
        coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
        return jax.tree_util.tree_map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    return optax.chain(
        clip_by_global_norm_torch(cfg.grad_clip),
        adamw_torch(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay),
    )


# ---------------------------------------------------------------------------------------------
# Train step
# ---------------------------------------------------------------------------------------------


def train_step(params, opt_state, batch, noise: TrainNoise, *, config, optimizer, attention_mask=False,
               compute_dtype=None, progress=None, trainable="all", return_grads=False):
    """One optimiser step. Returns (params, opt_state, metrics incl. the pre-clip grad norm).
    progress: see loss_fn. trainable: trainable.py's choice (the optimiser must be restricted
    to it); the frozen parameters come back as the very arrays given. return_grads: also the
    gradients, a fourth output (the parity checker reads the recorded gradients and the
    optimiser steps off one compiled program, not two)."""
    grads, metrics = jax.grad(frozen_loss_fn(trainable), has_aux=True)(
        params, batch, noise, config, attention_mask, None, compute_dtype, progress)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    new_params = keep_frozen(optax.apply_updates(params, updates), params, trainable)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads))
    if return_grads:
        return new_params, opt_state, metrics, grads
    return new_params, opt_state, metrics


def make_train_step(config: ModelConfig, optimizer, attention_mask: bool = False, donate: bool = True,
                    compute_dtype=None):
    """jit(train_step) with noise given explicitly: (params, opt_state, batch, noise)."""
    fn = functools.partial(train_step, config=config, optimizer=optimizer, attention_mask=attention_mask,
                           compute_dtype=compute_dtype)
    return jax.jit(fn, donate_argnums=(0, 1) if donate else ())


def make_keyed_train_step(config: ModelConfig, optimizer, attention_mask: bool = False, donate: bool = True):
    """jit'd (params, opt_state, batch, key): draws the step's noise from `key` inside the step."""

    def step(params, opt_state, batch, key):
        B, L = batch["sequence"].shape
        dtype = batch["coords_CA"].dtype
        noise = draw_train_noise_for(config, key, B, L, dtype)
        return train_step(params, opt_state, batch, noise, config=config, optimizer=optimizer, attention_mask=attention_mask)

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())
