"""Rigid frames in SE(3): rotations [..., 3, 3] and translations [..., 3], as a JAX pytree.

Every function here is pure and works on any leading batch shape, so it can be jitted and
vmapped freely. Operation order follows the reference so float64 results agree to ~1e-15.
"""

from typing import NamedTuple

import jax.numpy as jnp

from .residue_constants import LOCAL_C, LOCAL_N

# The reference adds this to norms before dividing, so zero vectors map to zero, not NaN.
NORM_EPS = 1e-8


class Rigid(NamedTuple):
    rots: jnp.ndarray  # [..., 3, 3]
    trans: jnp.ndarray  # [..., 3]


def identity(batch_shape, dtype=jnp.float32) -> Rigid:
    rots = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (*batch_shape, 3, 3))
    return Rigid(rots, jnp.zeros((*batch_shape, 3), dtype))


def rotate(rots: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """R @ v for rotations [..., 3, 3] and vectors [..., 3]."""
    return jnp.einsum("...ij,...j->...i", rots, v)


def compose(a: Rigid, b: Rigid) -> Rigid:
    """a ∘ b: first apply b, then a."""
    return Rigid(a.rots @ b.rots, rotate(a.rots, b.trans) + a.trans)


def invert(r: Rigid) -> Rigid:
    inv_rots = jnp.swapaxes(r.rots, -1, -2)
    return Rigid(inv_rots, -rotate(inv_rots, r.trans))


def apply(r: Rigid, points: jnp.ndarray) -> jnp.ndarray:
    return rotate(r.rots, points) + r.trans


def skew_symmetric(v: jnp.ndarray) -> jnp.ndarray:
    zero = jnp.zeros_like(v[..., 0])
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def _norm(v: jnp.ndarray, keepdims: bool = True) -> jnp.ndarray:
    return jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=keepdims))


def safe_norm(v: jnp.ndarray, keepdims: bool = True) -> jnp.ndarray:
    """Euclidean norm whose gradient at 0 is 0 (the reference's torch.norm gives 0 there too);
    a plain sqrt would give NaN gradients for a zero axis-angle vector."""
    sq = jnp.sum(v * v, axis=-1, keepdims=keepdims)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def axis_angle_to_rotation(axis_angle: jnp.ndarray) -> jnp.ndarray:
    """Rodrigues: R = I + sin(θ) K + (1 - cos θ) K², θ = |v|, K = skew(v / (|v| + 1e-8))."""
    norm = safe_norm(axis_angle)
    angle = norm[..., None]
    K = skew_symmetric(axis_angle / (norm + NORM_EPS))
    eye = jnp.eye(3, dtype=axis_angle.dtype)
    return eye + jnp.sin(angle) * K + (1 - jnp.cos(angle)) * (K @ K)


def frames_from_backbone(N: jnp.ndarray, CA: jnp.ndarray, C: jnp.ndarray) -> Rigid:
    """Local residue frame: x along CA→C, z normal to the (CA→C, CA→N) plane, origin at CA."""
    x = C - CA
    x = x / (safe_norm(x) + NORM_EPS)
    v = N - CA
    z = jnp.cross(x, v)
    z = z / (safe_norm(z) + NORM_EPS)
    y = jnp.cross(z, x)
    return Rigid(jnp.stack([x, y, z], axis=-1), CA)


def backbone_from_frames(frames: Rigid):
    """N, CA, C placed with the reference's ideal bond lengths and N-CA-C angle."""
    dtype = frames.trans.dtype
    c_local = jnp.broadcast_to(jnp.asarray(LOCAL_C, dtype), frames.trans.shape)
    n_local = jnp.broadcast_to(jnp.asarray(LOCAL_N, dtype), frames.trans.shape)
    return apply(frames, n_local), frames.trans, apply(frames, c_local)


def rotation_angle_between(rots_a: jnp.ndarray, rots_b: jnp.ndarray, eps: float = 1e-7):
    """Geodesic angle of R_a R_bᵀ, with the reference's clamp of cos into [-1+eps, 1-eps]."""
    rel = jnp.einsum("...ij,...kj->...ik", rots_a, rots_b)
    return _angle_of(rel, eps), rel


def _angle_of(rel: jnp.ndarray, eps: float) -> jnp.ndarray:
    trace = rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2]
    return jnp.arccos(jnp.clip((trace - 1) / 2, -1 + eps, 1 - eps))
