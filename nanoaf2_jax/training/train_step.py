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
from ..diffusion.se3 import (FrameNoise, draw_frame_noise, from_diffusion_space, se3_forward_marginal,
                             to_diffusion_space)
from ..model.losses import fape, frame_loss, plddt_loss
from ..model.alphafold2 import AlphaFold2
from ..geometry.rigid import backbone_from_frames, frames_from_backbone
from .adamw import adamw_torch
from .mixed_precision import cast_floating


class TrainNoise(NamedTuple):
    t: jnp.ndarray  # [B]
    frames: FrameNoise  # [B, L], [B, L, 3], [B, L, 3]


def draw_train_noise(key, batch_size: int, length: int, dtype=jnp.float32) -> TrainNoise:
    k_t, k_frames = jax.random.split(key)
    return TrainNoise(
        jax.random.uniform(k_t, (batch_size,), dtype), draw_frame_noise(k_frames, (batch_size, length), dtype)
    )


def residue_index_of(batch):
    seq = batch["sequence"]
    if "residue_index" in batch:
        return batch["residue_index"]
    # The reference numbers residues 0..L-1 whatever their PDB numbering.
    return jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape)


class LossTotals(NamedTuple):
    """The loss denominators of a whole batch: its real residues and residue pairs."""

    residues: jnp.ndarray
    pairs: jnp.ndarray


def loss_totals(mask) -> LossTotals:
    """Denominators of the masked means over `mask` [B, L] (those of losses.py's _masked_mean)."""
    m = mask.astype(jnp.float32)
    n = jnp.sum(m, axis=-1)
    return LossTotals(jnp.sum(m), jnp.sum(n * n))


def loss_fn(params, batch, noise: TrainNoise, config: ModelConfig, attention_mask: bool = False,
            totals: LossTotals | None = None, compute_dtype=None):
    """Total loss and its components for one batch.

    batch: sequence [B, L] int, mask [B, L] bool, coords_N/CA/C [B, L, 3].
    attention_mask: exclude padding from attention and triangular updates (our default recipe);
    False computes exactly the reference (padding only excluded from the losses).
    totals: the denominators of a larger batch this one is a part of (gradient accumulation:
    the parts' losses then add up to the whole batch's); None: this batch's own.
    compute_dtype: bfloat16 runs the model in bfloat16 on a cast copy of the float32 params
    (mixed_precision.py); the losses stay float32. None: the params' dtype.
    """
    model = AlphaFold2(config)
    params = cast_floating(params, compute_dtype)
    if totals is None:
        res_total = pair_total = None
    else:
        res_total, pair_total = (x.astype(batch["coords_CA"].dtype) for x in totals)
    mask = batch["mask"]
    model_mask = mask if attention_mask else None
    true_frames = frames_from_backbone(batch["coords_N"], batch["coords_CA"], batch["coords_C"])
    # Diffusion space: centred on the CA centroid and scaled by coord_scale where the config says
    # so (the reference: Å as read). The denoiser and the translation/rotation loss work there;
    # FAPE (clamp 10 Å) and the pLDDT targets (15 Å) compare Å, centred the same way.
    shift = config.center_coords or config.coord_scale != 1.0
    diff_frames = (to_diffusion_space(true_frames, mask, config.center_coords, config.coord_scale)
                   if shift else true_frames)

    def run(m):
        single, pair = m.trunk(batch["sequence"], residue_index_of(batch), model_mask)
        noisy = se3_forward_marginal(diff_frames, noise.t, noise.frames, config.rot_sigma_max,
                                     config.rotation_noise)
        pred = m.diffusion_module(noisy, noise.t, single, pair, model_mask)
        pred_a = from_diffusion_space(pred, config.coord_scale) if shift else pred
        # The structure head judges this one-step prediction: across t it sees structures of
        # every quality, each scored against its own lDDT-Cα.
        return pred, pred_a, m.plddt_logits(single, pair, pred_a.trans, mask)

    pred, pred_a, logits = nn_apply(model, params, run)
    logits = logits.astype(pred.trans.dtype)  # bfloat16 under mixed precision; losses in float32
    trans, rot = frame_loss(pred, diff_frames, mask, res_total)
    true_a = to_diffusion_space(true_frames, mask, config.center_coords, 1.0) if shift else true_frames
    _, pred_ca, _ = backbone_from_frames(pred_a)
    true_ca = true_a.trans if shift else batch["coords_CA"]
    if config.fape_atoms == "backbone":
        # N, CA, C of both sides placed ideally in their frames: the model can only build ideal
        # geometry, so the native frames' ideal atoms are the target it can reach.
        pred_pts = jnp.concatenate(backbone_from_frames(pred_a), axis=1)
        true_pts = jnp.concatenate(backbone_from_frames(true_a), axis=1)
        fape_l = fape(pred_a, true_a, pred_pts, true_pts, mask, point_mask=jnp.tile(mask, (1, 3)),
                      total=None if pair_total is None else 3 * pair_total)
    else:
        fape_l = fape(pred_a, true_a, pred_ca, true_ca, mask, total=pair_total)
    plddt_l = plddt_loss(logits, pred_ca, true_ca, mask, config.plddt_target, res_total)
    total = (
        config.trans_weight * trans + config.rot_weight * rot + config.fape_weight * fape_l + config.plddt_weight * plddt_l
    )
    metrics = {"loss": total, "fape_loss": fape_l, "trans_loss": trans, "rot_loss": rot, "plddt_loss": plddt_l}
    return total, metrics


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
               compute_dtype=None):
    """One optimiser step. Returns (params, opt_state, metrics incl. the pre-clip grad norm)."""
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch, noise, config, attention_mask,
                                                     None, compute_dtype)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads))
    return params, opt_state, metrics


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
        noise = draw_train_noise(key, B, L, dtype)
        return train_step(params, opt_state, batch, noise, config=config, optimizer=optimizer, attention_mask=attention_mask)

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())
