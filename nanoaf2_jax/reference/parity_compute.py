"""Recompute a golden fixture's outputs with the port: geometry, each recorded module alone,
losses, gradients, optimiser steps and the full sampling run. Used by parity.py."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from ..geometry import rigid
from ..model.model_config import ModelConfig
from ..model.convert import params_to_state_dict, state_dict_to_params
from ..diffusion.se3 import igso3_from_normals, r3_alpha_bar, so3_reverse_step
from ..model.losses import fape, frame_loss
from ..model.alphafold2 import AlphaFold2
from ..inference.sampling import SampleNoise, sample_jit
from ..diffusion.se3 import FrameNoise
from ..training.train_step import OptimConfig, TrainNoise, loss_fn, make_optimizer, train_step


def compute_all(fx) -> dict:
    config = ModelConfig.from_json(str(fx.z["config"]))
    params = state_dict_to_params(
        {k[len("param/"):]: fx.input(k) for k in fx.keys if k.startswith("param/")}, config, fx.dtype
    )
    out = {}
    out.update(geometry(fx))
    out.update(activations(fx, config, params))
    wants_grads = "loss/loss" in fx.keys or any(k.startswith("grad/") for k in fx.keys)
    if "train/losses" in fx.keys:
        # One compiled train step gives the recorded gradients (its first call, on noise/) and
        # the optimiser steps: the backward pass compiles once, not twice.
        out.update(optimiser_steps(fx, config, params, with_loss_and_grads=wants_grads))
    elif wants_grads:
        out.update(loss_and_grads(fx, config, params))
    if "sample/coords_CA" in fx.keys:
        out.update(sampling(fx, config, params))
    return {k: np.asarray(v) for k, v in out.items()}


def _batch(fx, prefix="batch/"):
    return {k[len(prefix):]: jnp.asarray(fx.input(k)) for k in fx.keys if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# geom/*
# ---------------------------------------------------------------------------------------------


def geometry(fx) -> dict:
    """geom/*: one compiled program for every recorded geometry check. (Run op by op, the
    dozens of small operations each compile on their own: ~3-5x the time of compiling them
    together, for the same float operations.)"""
    # Every geom/ key goes in (the recorded outputs unused): _geometry reads the inputs it finds.
    inputs = {k: jnp.asarray(fx.input(k)) for k in fx.keys if k.startswith("geom/")}
    if "batch/coords_CA" in fx.keys:
        inputs.update({f"batch/{k}": v for k, v in _batch(fx).items()
                       if k in ("coords_N", "coords_CA", "coords_C", "mask")})
    return jax.jit(_geometry)(inputs)


def _geometry(inputs: dict) -> dict:
    g = lambda k: inputs[f"geom/{k}"]  # noqa: E731
    has = lambda k: f"geom/{k}" in inputs  # noqa: E731
    out = {}
    if has("axis_angle"):
        out["geom/axis_angle_rotation"] = rigid.axis_angle_to_rotation(g("axis_angle"))
    if has("igso3_sigma"):
        out["geom/igso3_rotation"] = igso3_from_normals(g("igso3_sigma"), g("igso3_omega_normal"), g("igso3_axis_normal"))
    if has("r3_alpha_bar_t"):
        out["geom/r3_alpha_bar"] = r3_alpha_bar(g("r3_alpha_bar_t"))
    if "batch/coords_CA" not in inputs:
        return out
    b = {k.removeprefix("batch/"): v for k, v in inputs.items() if k.startswith("batch/")}
    local = rigid.frames_from_backbone(b["coords_N"], b["coords_CA"], b["coords_C"])
    out["geom/local_frame_rots"], out["geom/local_frame_trans"] = local
    out["geom/backbone_N"], out["geom/backbone_CA"], out["geom/backbone_C"] = rigid.backbone_from_frames(local)
    flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    reversed_local = rigid.frames_from_backbone(flip(b["coords_N"]), flip(b["coords_CA"]), flip(b["coords_C"]))
    out["geom/compose_rots"], out["geom/compose_trans"] = rigid.compose(local, reversed_local)
    out["geom/invert_rots"], out["geom/invert_trans"] = rigid.invert(local)
    if has("apply_points"):
        out["geom/apply_out"] = rigid.apply(local, g("apply_points"))
    if has("fape_pred_rots"):
        pred = rigid.Rigid(g("fape_pred_rots"), g("fape_pred_trans"))
        out["geom/fape_pred_ca"] = rigid.backbone_from_frames(pred)[1]
        pred_ca, true_ca, mask = g("fape_pred_ca"), b["coords_CA"], b["mask"]
        out["geom/fape_masked"] = fape(pred, local, pred_ca, true_ca, mask)
        out["geom/fape_unmasked"] = fape(pred, local, pred_ca, true_ca)
        out["geom/frame_loss_trans"], out["geom/frame_loss_rot"] = frame_loss(pred, local, mask)
        out["geom/so3_reverse"] = so3_reverse_step(pred.rots, local.rots, 0.6, 0.59)
    return out


# ---------------------------------------------------------------------------------------------
# act/MODULE/*: each recorded module run alone on its recorded inputs
# ---------------------------------------------------------------------------------------------

# Modules whose first two recorded inputs are one rigid transform (rots, then trans).
_RIGID_INPUT_MODULES = re.compile(r"^diffusion_module$")


def resolve_module(bound, torch_path: str):
    """Walk a bound Flax model along a reference module path ('pairformer_blocks.0.tri_out')."""
    obj = bound
    for part in torch_path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _call(module, args):
    from ..model.layers import run_sequential

    if isinstance(module, (tuple, list)):
        (x,) = args
        return run_sequential(module, x)
    return module(*args)


def activations(fx, config, params) -> dict:
    """act/*: every recorded module on its own recorded inputs, all in one compiled program
    (one per module spent most of the checker's time on compiling's fixed costs: ~60 modules in
    the larger fixtures)."""
    modules = sorted({k.split("/")[1] for k in fx.keys if k.startswith("act/")})
    model = AlphaFold2(config)
    inputs, n_outputs = {}, {}
    for name in modules:
        n_in = sum(1 for k in fx.keys if re.fullmatch(rf"act/{re.escape(name)}/in\d+", k))
        n_outputs[name] = sum(1 for k in fx.keys if re.fullmatch(rf"act/{re.escape(name)}/out\d+", k))
        inputs[name] = [jnp.asarray(fx.input(f"act/{name}/in{i}")) for i in range(n_in)]

    def run_all(m, inputs):
        results = {}
        for name, args in inputs.items():
            if _RIGID_INPUT_MODULES.match(name):
                args = [rigid.Rigid(args[0], args[1]), *args[2:]]
            results[name] = _call(resolve_module(m, name), args)
        return results

    results = jax.jit(lambda p, inputs: model.apply({"params": p}, inputs, method=run_all))(params, inputs)
    out = {}
    for name in modules:
        leaves = jax.tree_util.tree_leaves(results[name])
        if len(leaves) != n_outputs[name]:
            raise ValueError(f"act/{name}: port returns {len(leaves)} outputs, fixture has {n_outputs[name]}")
        for i, leaf in enumerate(leaves):
            out[f"act/{name}/out{i}"] = leaf
    return out


# ---------------------------------------------------------------------------------------------
# loss/*, grad/*, train/*
# ---------------------------------------------------------------------------------------------


def _train_noise(fx, prefix, index=None):
    pick = (lambda x: x) if index is None else (lambda x: x[index])
    get = lambda k: jnp.asarray(pick(fx.input(prefix + k)))
    return TrainNoise(get("t"), FrameNoise(get("rot_omega"), get("rot_axis"), get("trans")))


def _loss_and_grad_keys(metrics, grads) -> dict:
    out = {f"loss/{k}": v for k, v in metrics.items() if k != "grad_norm"}
    out.update({f"grad/{k}": v for k, v in params_to_state_dict(grads).items()})
    return out


def loss_and_grads(fx, config, params) -> dict:
    batch = _batch(fx)
    noise = _train_noise(fx, "noise/")
    grad_fn = jax.jit(jax.grad(lambda p: loss_fn(p, batch, noise, config), has_aux=True))
    grads, metrics = grad_fn(params)
    return _loss_and_grad_keys(metrics, grads)


def optimiser_steps(fx, config, params, with_loss_and_grads=False) -> dict:
    """train/*: the recorded optimiser steps through the train step of training; with
    `with_loss_and_grads` also loss/* and grad/*, from that step's first call on noise/ (the
    same loss_fn and jax.grad as loss_and_grads, so the same numbers)."""
    batch = _batch(fx)
    # Settings are stored as float32 (0.003 -> 0.0030000000261); the reference ran with the
    # decimal value, which is the shortest decimal that rounds to the stored float32.
    scalar = lambda k: float(str(fx.z[f"train/{k}"].item() if fx.z[f"train/{k}"].dtype.kind == "i" else np.float32(fx.z[f"train/{k}"])))
    opt_cfg = OptimConfig(
        learning_rate=scalar("learning_rate"), weight_decay=scalar("weight_decay"),
        warmup_steps=int(scalar("warmup_steps")), total_steps=int(scalar("schedule_steps")),
        grad_clip=scalar("grad_clip"),
    )
    optimizer = make_optimizer(opt_cfg)
    step = jax.jit(functools.partial(train_step, config=config, optimizer=optimizer, return_grads=True))
    opt_state = optimizer.init(params)
    out = {}
    if with_loss_and_grads:
        _, _, metrics, grads = step(params, opt_state, batch, _train_noise(fx, "noise/"))
        out.update(_loss_and_grad_keys(metrics, grads))
    losses = []
    for i in range(fx.z["train/noise/t"].shape[0]):
        params, opt_state, metrics, _ = step(params, opt_state, batch, _train_noise(fx, "train/noise/", i))
        losses.append(metrics["loss"])
    out["train/losses"] = jnp.stack(losses)
    out.update({f"train/param/{k}": v for k, v in params_to_state_dict(params).items()})
    return out


def sampling(fx, config, params) -> dict:
    get = lambda k: jnp.asarray(fx.input(f"sample/noise/{k}"))
    noise = SampleNoise(get("rot_omega"), get("rot_axis"), get("trans_init"), get("trans_steps"))
    num_steps = int(fx.z["sample/num_steps"]) if "sample/num_steps" in fx.keys else noise.trans_steps.shape[0] + 1
    if noise.trans_steps.shape[0] != num_steps - 1:
        raise ValueError(f"sample/noise/trans_steps has {noise.trans_steps.shape[0]} steps, expected {num_steps - 1}")
    result = sample_jit(params, jnp.asarray(fx.input("sample/sequence")), noise, config)
    out = {f"sample/{k}": v[0] for k, v in result.items() if k != "plddt"}
    out["sample/plddt"] = result["plddt"][0]  # the reference's head: one row for all samples
    return out


def loss_spread(fx, draws: int, seed: int = 0) -> dict:
    """For each loss/* key: the RMS change of the port's forward loss when every weight is moved
    by one float32 ulp, up or down at random (`draws` seeded draws; same batch and noise).

    That is the key's own float32 sensitivity: rounding perturbs every operation by about an
    ulp, so a correct float32 program cannot be expected much closer to the truth. Most
    losses move by ~1e-7 relative; the rotation loss moves by far more where the denoiser's
    rotation vector is many turns long (fx51: 75 rad, so a relative rounding of 5e-7 of the
    vector is an absolute 4e-5 of each angle). A bug moves the nudged runs with the unnudged
    one, so it does not widen this spread."""
    config = ModelConfig.from_json(str(fx.z["config"]))
    # Sorted: fx.keys is a set, whose order changes with each process's string hashing, and the
    # draws must fall on the same weights every run.
    state = {k[len("param/"):]: fx.input(k) for k in sorted(fx.keys) if k.startswith("param/")}
    batch, noise = _batch(fx), _train_noise(fx, "noise/")
    forward = jax.jit(lambda p: loss_fn(p, batch, noise, config)[1])
    base = {k: float(v) for k, v in forward(state_dict_to_params(state, config, fx.dtype)).items()}
    rng = np.random.default_rng(seed)
    moves = {k: [] for k in base}
    for _ in range(draws):
        nudged = {k: np.nextafter(v, np.where(rng.random(v.shape) < 0.5, -np.inf, np.inf).astype(v.dtype))
                  for k, v in state.items()}
        for k, v in forward(state_dict_to_params(nudged, config, fx.dtype)).items():
            moves[k].append(float(v) - base[k])
    return {f"loss/{k}": float(np.sqrt(np.mean(np.square(m)))) for k, m in moves.items()}
