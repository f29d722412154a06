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


def antisymmetric_vector(rel: jnp.ndarray) -> jnp.ndarray:
    """vee(R - Rᵀ) = 2 sin θ · axis for a rotation R by θ about axis: [..., 3, 3] -> [..., 3]."""
    return jnp.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]], axis=-1
    )


def _angle_of(rel: jnp.ndarray, eps: float) -> jnp.ndarray:
    """arccos(clip((tr R - 1)/2, -1+eps, 1-eps)): the reference's formula in float64; in lower
    precision the same function on rotations, evaluated as atan2(sin θ, cos θ).

    Why: arccos is ill-conditioned near cos θ = ±1. In float32, one ulp of error in the entries
    of R (whose size depends on the summation order XLA:CPU picks on a given CPU) moves sin θ by
    ~ulp/sin θ, and θ's gradient with it: 1.2e-4 relative at θ = 3.1 in a recorded fixture, 200×
    the reference's own float32 error there. Taking sin θ from the antisymmetric part
    (R - Rᵀ = 2 sin θ [axis]×) makes the angle accurate to a few ulp at every θ. The two forms
    differ only where R is not exactly orthonormal: the reference's frames are off by ~1e-8 (its
    x / (|x| + 1e-8) normalisation), below float32 resolution but not float64's, so float64
    keeps the literal formula. The clamp is kept, and inputs that are not rotations at all (the
    zero frames of padded residues, where sin² + cos² ≠ 1) use the literal formula too.
    """
    trace = rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2]
    cos = (trace - 1) / 2
    lo, hi = -1 + eps, 1 - eps
    literal = jnp.arccos(jnp.clip(cos, lo, hi))
    if jnp.finfo(rel.dtype).bits >= 64:
        return literal
    sin_axis = antisymmetric_vector(rel)
    sin_sq = jnp.sum(sin_axis * sin_axis, axis=-1) / 4
    stable = (cos > lo) & (cos < hi) & (sin_sq > 0) & (jnp.abs(sin_sq + cos * cos - 1) < 1e-3)
    # The inner where keeps sqrt's gradient finite on the branch that is not taken.
    theta = jnp.arctan2(jnp.sqrt(jnp.where(stable, sin_sq, 1.0)), cos)
    return jnp.where(stable, theta, literal)


def quaternion_to_rotation(q: jnp.ndarray) -> jnp.ndarray:
    """Rotation of the quaternion (w, x, y, z) [..., 4], normalised first (any nonzero q).

    With q drawn from N(0, I₄) the rotation is Haar-uniform on SO(3): a standard normal in R⁴
    divided by its norm is uniform on S³, and S³ → SO(3) is the double cover that carries the
    uniform measure to the Haar measure.
    """
    q = q / (safe_norm(q) + NORM_EPS)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=-2,
    )


def quaternion_update_to_rotation(bcd: jnp.ndarray) -> jnp.ndarray:
    """AlphaFold 2's bounded rotation update (Suppl. Alg. 23): the quaternion (1, b, c, d)
    normalised, from bcd [..., 3]. Unlike Rodrigues with K = skew(v/(|v|+ε)), whose derivative at
    v = 0 is exactly zero, R ≈ I + 2 skew(b, c, d) near zero: a zero-initialised output learns."""
    one = jnp.ones_like(bcd[..., :1])
    return quaternion_to_rotation(jnp.concatenate([one, bcd], axis=-1))


def masked_centroid(points: jnp.ndarray, mask=None) -> jnp.ndarray:
    """Mean of points [..., L, 3] over the residues where mask [..., L] is set -> [..., 3]
    (the origin where none is)."""
    if mask is None:
        return jnp.mean(points, axis=-2)
    m = mask.astype(points.dtype)[..., None]
    return jnp.sum(points * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1.0)


def _neighbour(x, valid, k: int, axis: int):
    """(x at residue i + k along `axis`, clamped at the chain's ends; whether residue i + k
    exists and is real). valid [..., L]."""
    L = valid.shape[-1]
    idx = jnp.clip(jnp.arange(L) + k, 0, L - 1)
    exists = (jnp.arange(L) + k >= 0) & (jnp.arange(L) + k < L) & jnp.take(valid, idx, axis=-1)
    return jnp.take(x, idx, axis=axis), exists


def ca_trace_rotations(ca: jnp.ndarray, mask=None) -> jnp.ndarray:
    """A rotation per residue from its CA neighbours alone: frames_from_backbone(CA(i-1), CA(i),
    CA(i+1)). ca [..., L, 3], mask [..., L] -> [..., L, 3, 3].

    Why: a CA trace fixes most of each residue's N-CA-C orientation (CA-only backbone builders
    rest on that), so a rotation predicted as this frame times a learned correction starts within
    tens of degrees of the truth instead of from the noisy input's random rotation. Residues
    without a real neighbour on both sides (the chain ends, the last one before padding) take the
    frame of their inner neighbour; with fewer than three real residues, the identity.
    """
    valid = jnp.ones(ca.shape[:-1], bool) if mask is None else mask.astype(bool)
    prev, has_prev = _neighbour(ca, valid, -1, axis=-2)
    nxt, has_next = _neighbour(ca, valid, 1, axis=-2)
    rots = frames_from_backbone(prev, ca, nxt).rots
    interior = valid & has_prev & has_next
    inner_next, _ = _neighbour(rots, valid, 1, axis=-3)
    inner_prev, _ = _neighbour(rots, valid, -1, axis=-3)
    next_interior = _neighbour(interior, valid, 1, axis=-1)[0] & has_next
    prev_interior = _neighbour(interior, valid, -1, axis=-1)[0] & has_prev
    eye = jnp.broadcast_to(jnp.eye(3, dtype=ca.dtype), rots.shape)
    end = jnp.where(next_interior[..., None, None], inner_next,
                    jnp.where(prev_interior[..., None, None], inner_prev, eye))
    return jnp.where(interior[..., None, None], rots, end)


def local_neighbour_vectors(ca: jnp.ndarray, rots: jnp.ndarray, mask=None, offsets=(-2, -1, 1, 2)):
    """CA(i+k) - CA(i) in residue i's frame, for each k in offsets, zero where residue i+k is
    not a real residue; and those validity flags. ca [..., L, 3], rots [..., L, 3, 3] ->
    [..., L, 3·len(offsets)], [..., L, len(offsets)]. Rotation- and translation-invariant
    features of the local chain geometry (what fixes N and C given the CA trace)."""
    valid = jnp.ones(ca.shape[:-1], bool) if mask is None else mask.astype(bool)
    vectors, flags = [], []
    for k in offsets:
        neighbour, exists = _neighbour(ca, valid, k, axis=-2)
        ok = valid & exists
        local = jnp.einsum("...ji,...j->...i", rots, neighbour - ca)
        vectors.append(local * ok[..., None].astype(ca.dtype))
        flags.append(ok.astype(ca.dtype))
    return jnp.concatenate(vectors, axis=-1), jnp.stack(flags, axis=-1)
