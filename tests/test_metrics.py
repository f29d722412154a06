import numpy as np
import pytest

from nanoaf2_jax.evaluation.metrics import (
    apply_transform,
    ca_rmsd,
    distance_map,
    kabsch,
    lddt_ca,
    tm_d0,
    tm_score,
    tm_superposition,
)


def helix(length):
    i = np.arange(length)
    theta = np.deg2rad(100.0) * i
    return np.stack([2.3 * np.cos(theta), 2.3 * np.sin(theta), 1.5 * i], axis=-1)


def random_walk(length, seed):
    """A CA-like chain: 3.8 A steps with some persistence, so it is compact but not a line."""
    rng = np.random.default_rng(seed)
    x = np.zeros((length, 3))
    step = np.array([1.0, 0.0, 0.0])
    for i in range(1, length):
        step = 0.6 * step + rng.normal(size=3) / np.sqrt(3)
        step /= np.linalg.norm(step)
        x[i] = x[i - 1] + 3.8 * step
    return x


def chain(kind, length, seed=0):
    return helix(length) if kind == "helix" else random_walk(length, seed)


def random_rigid(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    return R, rng.normal(scale=20.0, size=3)


def perturbed(kind, length, sigma, seed):
    native = chain(kind, length, seed)
    noise = np.random.default_rng(seed + 1000).normal(scale=sigma, size=native.shape)
    R, t = random_rigid(seed + 2000)
    return apply_transform(native + noise, R, t), native


def quaternion_rmsd(P, Q):
    """Horn's closed-form RMSD: largest eigenvalue of the 4x4 quaternion matrix, no SVD."""
    P = P - P.mean(axis=0)
    Q = Q - Q.mean(axis=0)
    (sxx, sxy, sxz), (syx, syy, syz), (szx, szy, szz) = P.T @ Q
    N = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ])
    msd = (np.sum(P * P) + np.sum(Q * Q) - 2.0 * np.linalg.eigvalsh(N)[-1]) / len(P)
    return np.sqrt(max(msd, 0.0))


def alphafold_lddt(pred, true, cutoff=15.0, per_residue=False):
    """alphafold/model/lddt.py, transcribed to numpy (single chain, all residues present)."""
    dmat_true = np.sqrt(1e-10 + np.sum((true[:, None] - true[None, :]) ** 2, axis=-1))
    dmat_pred = np.sqrt(1e-10 + np.sum((pred[:, None] - pred[None, :]) ** 2, axis=-1))
    dists_to_score = (dmat_true < cutoff).astype(np.float64) * (1.0 - np.eye(len(true)))
    dist_l1 = np.abs(dmat_true - dmat_pred)
    score = 0.25 * ((dist_l1 < 0.5).astype(float) + (dist_l1 < 1.0) + (dist_l1 < 2.0)
                    + (dist_l1 < 4.0))
    axes = (-1,) if per_residue else (-2, -1)
    norm = 1.0 / (1e-10 + np.sum(dists_to_score, axis=axes))
    return norm * (1e-10 + np.sum(dists_to_score * score, axis=axes))


# --- superposition and RMSD ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["helix", "walk"])
def test_rigid_copy_is_perfect(kind):
    native = chain(kind, 70, seed=3)
    R0, t0 = random_rigid(4)
    moved = apply_transform(native, R0, t0)
    R, t = kabsch(moved, native)
    np.testing.assert_allclose(R, R0.T, atol=1e-10)
    np.testing.assert_allclose(apply_transform(moved, R, t), native, atol=1e-9)
    assert ca_rmsd(moved, native) < 1e-9
    assert tm_score(moved, native) == pytest.approx(1.0, abs=1e-12)
    global_lddt, per_res = lddt_ca(moved, native)
    assert global_lddt == 1.0 and np.all(per_res == 1.0)


@pytest.mark.parametrize("kind", ["helix", "walk"])
def test_mirror_image_is_not_superposable(kind):
    native = chain(kind, 60, seed=5)
    mirror = native * np.array([-1.0, 1.0, 1.0])
    R, _ = kabsch(mirror, native)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    assert ca_rmsd(mirror, native) > 1.0
    assert tm_score(mirror, native) < 0.9
    # lDDT only sees distances, which a reflection keeps.
    assert lddt_ca(mirror, native)[0] == 1.0


@pytest.mark.parametrize("kind,length,sigma", [("helix", 60, 0.5), ("walk", 80, 1.5),
                                               ("walk", 100, 3.0)])
def test_rmsd_matches_quaternion_formula(kind, length, sigma):
    pred, native = perturbed(kind, length, sigma, seed=length)
    assert ca_rmsd(pred, native) == pytest.approx(quaternion_rmsd(pred, native), abs=1e-9)


@pytest.mark.parametrize("kind,length,sigma", [("helix", 60, 0.5), ("walk", 90, 2.0)])
def test_rmsd_matches_biotite(kind, length, sigma):
    struc = pytest.importorskip("biotite.structure")
    pred, native = perturbed(kind, length, sigma, seed=length)
    fitted, _ = struc.superimpose(native, pred)
    # biotite works in float32, hence 1e-5 rather than the float64 agreement above.
    assert ca_rmsd(pred, native) == pytest.approx(float(struc.rmsd(native, fitted)), abs=1e-5)


def test_rmsd_mask_selects_residues():
    pred, native = perturbed("walk", 50, 1.0, seed=9)
    mask = np.zeros(50, bool)
    mask[5:40] = True
    assert ca_rmsd(pred, native, mask) == pytest.approx(ca_rmsd(pred[5:40], native[5:40]))


# --- TM-score -----------------------------------------------------------------------------

def test_tm_d0():
    assert tm_d0(10) == 0.5
    assert tm_d0(21) == 0.5
    assert tm_d0(22) == pytest.approx(1.24 * 7 ** (1 / 3) - 1.8)
    assert tm_d0(100) == pytest.approx(1.24 * 85 ** (1 / 3) - 1.8)


def test_tm_score_normalisation_and_mask():
    native = chain("walk", 40, seed=2)
    # A perfect model of half the target: every aligned pair scores 1, divided by L_target.
    assert tm_score(native, native, L_target=80) == pytest.approx(0.5)
    pred, native = perturbed("walk", 60, 1.0, seed=6)
    mask = np.arange(60) % 3 != 0
    assert tm_score(pred, native, mask) == pytest.approx(tm_score(pred[mask], native[mask]))
    assert tm_score(pred, native, mask, L_target=60) < tm_score(pred, native, mask)


def test_tm_superposition_attains_the_score():
    pred, native = perturbed("walk", 70, 2.0, seed=8)
    score, R, t = tm_superposition(pred, native)
    d2 = np.sum((apply_transform(pred, R, t) - native) ** 2, axis=-1)
    assert score == pytest.approx(np.mean(1.0 / (1.0 + d2 / tm_d0(70) ** 2)), abs=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)


TM_CASES = [("helix", 60, 0.5), ("walk", 64, 1.0), ("helix", 90, 2.0), ("walk", 80, 2.0),
            ("walk", 100, 3.0), ("walk", 18, 1.0)]


@pytest.mark.parametrize("kind,length,sigma", TM_CASES)
def test_tm_score_matches_tmalign(kind, length, sigma):
    tmtools = pytest.importorskip("tmtools", minversion="0.3")  # 0.3 accepts a fixed alignment
    pred, native = perturbed(kind, length, sigma, seed=length + int(10 * sigma))
    seq = "A" * length
    # Give TM-align the identity alignment (its -I mode): its final score is then the same
    # superposition search over the same residue pairs that TM-score runs.
    ref = tmtools.tm_align(pred, native, seq, seq, alignment=[seq, seq])
    assert tm_score(pred, native) == pytest.approx(ref.tm_norm_chain2, abs=1e-6)


# --- lDDT ---------------------------------------------------------------------------------

def test_lddt_hand_computed():
    # On a line, so every distance is a difference of x values.
    native = np.array([0.0, 3.0, 6.0, 20.0, 100.0])
    pred = np.array([0.0, 3.3, 7.5, 20.7, 100.0])
    to3d = lambda x: np.stack([x, np.zeros_like(x), np.zeros_like(x)], axis=-1)  # noqa: E731
    # Scored pairs (native distance < 15): 0-1 (3), 0-2 (6), 1-2 (3), 2-3 (14); residue 4 has
    # none. Errors 0.3, 1.5, 1.2, 0.8 pass 4, 2, 2, 3 of the thresholds (0.5, 1, 2, 4).
    global_lddt, per_res = lddt_ca(to3d(pred), to3d(native))
    pair = {(0, 1): 1.0, (0, 2): 0.5, (1, 2): 0.5, (2, 3): 0.75}
    assert global_lddt == pytest.approx(np.mean(list(pair.values())))  # 0.6875
    np.testing.assert_allclose(per_res[:4], [0.75, 0.75, (0.5 + 0.5 + 0.75) / 3, 0.75])
    assert np.isnan(per_res[4])
    # The global score weights residues by pair count; it is not the mean of per_res (0.708).
    assert global_lddt != pytest.approx(np.nanmean(per_res))


@pytest.mark.parametrize("kind,length,sigma", [("helix", 60, 0.7), ("walk", 90, 2.0)])
def test_lddt_matches_alphafold(kind, length, sigma):
    pred, native = perturbed(kind, length, sigma, seed=length)
    global_lddt, per_res = lddt_ca(pred, native)
    assert global_lddt == pytest.approx(alphafold_lddt(pred, native), abs=1e-9)
    np.testing.assert_allclose(per_res, alphafold_lddt(pred, native, per_residue=True),
                               atol=1e-9)


def test_lddt_mask_drops_residues():
    pred, native = perturbed("walk", 40, 1.5, seed=11)
    mask = np.ones(40, bool)
    mask[[3, 17, 30]] = False
    global_lddt, per_res = lddt_ca(pred, native, mask)
    sub_global, sub_per_res = lddt_ca(pred[mask], native[mask])
    assert global_lddt == pytest.approx(sub_global)
    np.testing.assert_allclose(per_res[mask], sub_per_res)
    assert np.all(np.isnan(per_res[~mask]))


def test_distance_map():
    ca = chain("walk", 12, seed=1)
    dmap = distance_map(ca)
    explicit = [[np.linalg.norm(a - b) for b in ca] for a in ca]
    np.testing.assert_allclose(dmap, explicit, atol=1e-12)
    assert np.allclose(np.diag(dmap), 0.0) and np.allclose(dmap, dmap.T)


# ---------------------------------------------------------------------------------------------
# Whole-backbone scores
# ---------------------------------------------------------------------------------------------

from nanoaf2_jax.evaluation.backbone_metrics import (  # noqa: E402
    backbone_rmsd, backbone_scores, frame_rotation_errors, peptide_geometry,
)
from nanoaf2_jax.evaluation.metrics import ca_rmsd as _ca_rmsd  # noqa: E402
from helpers import helix as helix_protein  # noqa: E402


def _rotation(axis, degrees):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _backbone(protein):
    return tuple(np.asarray(x, np.float64) for x in (protein.coords_N, protein.coords_CA, protein.coords_C))


def test_backbone_scores_vanish_under_a_rigid_motion():
    native = _backbone(helix_protein(30))
    R, t = _rotation([1, 2, -0.5], 70), np.array([3.0, -8.0, 1.0])
    moved = tuple(x @ R.T + t for x in native)
    scores = backbone_scores(moved, native)
    assert scores["backbone_rmsd"] < 1e-6
    assert scores["rotation_error_deg"] < 1e-4


def test_a_perfect_ca_trace_with_misplaced_n_and_c_is_caught():
    native = _backbone(helix_protein(30))
    n, ca, c = native
    rng = np.random.default_rng(0)
    spun = [_rotation(rng.standard_normal(3), rng.uniform(60, 180)) for _ in range(30)]
    n2 = np.stack([ca[i] + spun[i] @ (n[i] - ca[i]) for i in range(30)])
    c2 = np.stack([ca[i] + spun[i] @ (c[i] - ca[i]) for i in range(30)])
    pred = (n2, ca, c2)
    assert _ca_rmsd(ca, ca) < 1e-9
    assert backbone_rmsd(pred, native) > 1.0
    assert np.mean(frame_rotation_errors(pred, native)) > 40.0


def test_frame_rotation_error_is_the_angle_of_the_turned_residue():
    native = _backbone(helix_protein(40))
    n, ca, c = (x.copy() for x in native)
    R = _rotation([0.3, -1.0, 0.4], 30)
    n[20] = ca[20] + R @ (n[20] - ca[20])
    c[20] = ca[20] + R @ (c[20] - ca[20])
    errors = frame_rotation_errors((n, ca, c), native)
    # The superposition over all atoms barely moves for one residue in 40.
    assert errors[20] == pytest.approx(30.0, abs=1.0)
    assert np.max(np.delete(errors, 20)) < 1.0


def test_peptide_geometry_fractions_and_means():
    # A straight chain: N-CA 1.458, CA-C 1.523, C-N(next) 1.33, so CA-CA 4.311.
    steps = np.array([1.458, 1.523, 1.33] * 10)
    x = np.concatenate([[0.0], np.cumsum(steps)])[:30]
    x[3 * 5:] += 0.15  # the bond C(4)-N(5) is 1.48 Å: out by 0.15
    atoms = np.stack([x, np.zeros(30), np.zeros(30)], -1).reshape(10, 3, 3)
    g = peptide_geometry((atoms[:, 0], atoms[:, 1], atoms[:, 2]))
    assert g["c_n_within_0.1"] == pytest.approx(8 / 9)
    assert g["c_n_within_0.2"] == 1.0
    assert g["c_n_mean"] == pytest.approx(1.33 + 0.15 / 9)
    assert g["ca_ca_within_0.2"] == 0.0  # straight chains are not real: 4.31 Å, not 3.80
