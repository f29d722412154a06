"""The float32 `flips` pass rule (docs/parity.md, section 6) on small synthetic fixtures: it
must pass what rounding amplified by Adam does to a correct port (elements whose gradient is
rounding noise move a whole step the other way) and fail what a bug does, where the golden rule
cannot tell the two apart; and a forward loss within 20x its one-ulp spread where the reference's
own error cancelled by luck. The port's results are built in numpy and judged by the checker's
own `Fixture.check`; only the last test runs the model (the small `other_config` fixture's
forward, ~10 s)."""

import numpy as np
import pytest

from nanoaf2_jax.reference.parity import Fixture
from nanoaf2_jax.reference.parity_flips import adam_reach, adam_step_bound, schedule_learning_rates

LR, WARMUP, TOTAL, STEPS = 3e-3, 10, 30, 4
KEY = "blocks.0.transition.linear1.weight"


def adamw(theta0, grads, lrs, wd=0.01, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW in float64 numpy."""
    p, m, v = theta0.astype(np.float64), 0.0, 0.0
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)
    return p


def test_step_bound_is_attained_and_never_exceeded():
    rng = np.random.default_rng(0)
    for t in (1, 2, 4):
        worst = 0.0
        for _ in range(2000):
            g = rng.standard_normal(t) * np.exp(3 * rng.standard_normal(t))
            w = np.array([0.1 * 0.9 ** (t - i) for i in range(1, t + 1)])
            om = np.array([0.001 * 0.999 ** (t - i) for i in range(1, t + 1)])
            ratio = abs(w @ g / (1 - 0.9**t)) / np.sqrt(om @ g**2 / (1 - 0.999**t))
            worst = max(worst, ratio)
        assert worst <= adam_step_bound(t) * (1 + 1e-12)
        attained = w / om  # the Cauchy-Schwarz equality case
        ratio = abs(w @ attained / (1 - 0.9**t)) / np.sqrt(om @ attained**2 / (1 - 0.999**t))
        assert ratio == pytest.approx(adam_step_bound(t), rel=1e-12)
    lrs = schedule_learning_rates(LR, WARMUP, TOTAL, STEPS)
    assert lrs[0] == 0.0 and lrs[3] == pytest.approx(9e-4)
    assert adam_reach(lrs) == pytest.approx(2 * 1.8e-3, rel=1e-2)


def _fixture(tmp_path, port_bug=None, seed=0):
    """A fixture with one weight trained by AdamW for STEPS steps, its gradient recorded, and
    the port's results. 2% of the elements are 'dead' (gradient exactly 0) until the last step,
    where they get a gradient of 1e-3 of the others: which sign it has is decided by rounding,
    and each of the three float32 programs (reference, port) gets its own, as a ReLU unit that
    comes alive at a pre-activation within rounding of 0 does on the full-size model."""
    rng = np.random.default_rng(seed)
    shape = (64, 48)
    lrs = schedule_learning_rates(LR, WARMUP, TOTAL, STEPS)
    theta0 = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    grads = [1e-3 * rng.standard_normal(shape) for _ in range(STEPS)]
    dead = rng.random(shape) < 0.02
    for g in grads[:-1]:
        g[dead] = 0.0
    grads[-1][dead] = 1e-6 * rng.choice([-1.0, 1.0], dead.sum())

    def program(noise_seed, flip):
        r = np.random.default_rng(noise_seed)
        gs = [g * (1 + 1e-7 * r.standard_normal(shape)) for g in grads]  # float32 rounding
        gs[-1][dead] *= np.where(r.random(dead.sum()) < flip, -1.0, 1.0)
        return gs

    truth = adamw(theta0, grads, lrs)
    ref32 = adamw(theta0, program(1, flip=0.0), lrs).astype(np.float32)  # no flips this time
    port_grads = program(2, flip=0.5)
    if port_bug == "lost_update":  # e.g. a gradient that does not reach this tensor
        port_grads = [np.zeros(shape) for _ in port_grads]
    port_lrs = lrs
    if port_bug == "schedule_off_by_one":  # warmup from lr/W instead of 0
        port_lrs = schedule_learning_rates(LR, WARMUP, TOTAL, STEPS + 1)[1:]
    port = adamw(theta0, port_grads, port_lrs)
    if port_bug == "scaled_update":  # every update 2% too short
        port = theta0 + 0.98 * (port - theta0)

    grad_truth = grads[0] + 1e-3 * rng.standard_normal(shape)
    grad_ref32 = (grad_truth * (1 + 1e-7 * rng.standard_normal(shape))).astype(np.float32)
    grad_port = grad_truth * (1 + 1e-7 * rng.standard_normal(shape))
    grad_port[5] += 0.02 * np.abs(grad_truth).max()  # one ReLU flip: one term, one row
    if port_bug == "grad_scale":  # 1% too large: within one term's L2, but everywhere
        grad_port = grad_port * (1 + 1e-2)

    losses_truth = np.array([5000.0, 5100.0, 90000.0, 60000.0])
    losses_ref32 = (losses_truth + [1e-3, 2e-3, 1.0, 2.0]).astype(np.float32)
    # Golden allowance 20 x 2.0 = 40; the last loss, after three steps, is off by 50 (8e-4 relative).
    losses_port = losses_truth + [1e-3, 2e-3, 0.0, 50.0]
    if port_bug == "first_loss":  # the loss before any step, at the recorded weights
        losses_port[0] += 100.0

    mask = np.ones((2, 30), bool)
    mask[1, 20:] = False
    data = {
        f"param/{KEY}": theta0, "batch/mask": mask,
        "train/learning_rate": np.float32(LR), "train/weight_decay": np.float32(0.01),
        "train/warmup_steps": np.int64(WARMUP), "train/schedule_steps": np.int64(TOTAL),
        "train/grad_clip": np.float32(1.0), "train/noise/t": np.zeros((STEPS, 2), np.float32),
        f"train/param/{KEY}": ref32, f"f64/train/param/{KEY}": truth,
        f"grad/{KEY}": grad_ref32, f"f64/grad/{KEY}": grad_truth,
        "train/losses": losses_ref32, "f64/train/losses": losses_truth,
    }
    path = tmp_path / "synthetic.npz"
    np.savez(path, **data)
    port_results = {f"train/param/{KEY}": port, f"grad/{KEY}": grad_port, "train/losses": losses_port}
    return path, port_results


def _judge(path, results, rule):
    fx = Fixture(str(path), x64=False, rule=rule)
    return {k: fx.check(k, v) for k, v in results.items()}


def test_flips_rule_passes_sign_flips_amplified_by_adam_that_the_golden_rule_fails(tmp_path):
    path, results = _fixture(tmp_path)
    golden = _judge(path, results, "golden")
    flips = _judge(path, results, "flips")
    # The flipped elements moved about a whole step the other way: far beyond 20x the
    # reference's own error in this tensor, where the reference happened not to flip.
    assert not golden[f"train/param/{KEY}"].ok
    assert golden[f"train/param/{KEY}"].error > 1e-4
    assert not golden[f"grad/{KEY}"].ok and not golden["train/losses"].ok
    assert all(c.ok for c in flips.values()), {k: (c.ratio, c.flips_why) for k, c in flips.items()}
    assert flips[f"train/param/{KEY}"].flips_ratio < 0.5


@pytest.mark.parametrize("bug, key", [
    ("lost_update", f"train/param/{KEY}"),
    ("schedule_off_by_one", f"train/param/{KEY}"),
    ("scaled_update", f"train/param/{KEY}"),
    ("grad_scale", f"grad/{KEY}"),
    ("first_loss", "train/losses"),
])
def test_flips_rule_fails_planted_bugs(tmp_path, bug, key):
    path, results = _fixture(tmp_path, port_bug=bug)
    check = _judge(path, results, "flips")[key]
    assert not check.ok, (check.ratio, check.flips_why)


def test_flips_rule_leaves_the_other_rules_and_float64_alone(tmp_path):
    path, results = _fixture(tmp_path)
    for rule in ("golden", "nonsmooth"):
        for check in _judge(path, results, rule).values():
            assert check.flips_why == "" and np.isnan(check.flips_ratio)
    fx = Fixture(str(path), x64=True, rule="flips")
    check = fx.check(f"train/param/{KEY}", results[f"train/param/{KEY}"])
    assert not check.ok and check.flips_why == ""


def _rotation_loss_fixture(tmp_path, seed=0):
    """A rotation loss as fx51's: the mean of θ² over 78 residues whose float32 angles are off by
    |v| · 5e-7 each (a denoiser rotation vector v of ~75 rad, relative rounding 5e-7). Each
    program's error is a random walk of those; the reference's run is the draw, among the first
    50, whose walk cancelled best (fx51's did to 0.07 of its spread). A one-ulp nudge of every
    weight moves the network's output about as much as rounding does (fx51: the port's spread
    2.6e-5, its walk's 1.9e-5), so the spread is four more such draws. Returns the fixture, the
    walk's size, one correct program's loss per seed and the spread."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.5, 3.0, 78)
    v_norm = rng.uniform(69.0, 87.0, 78)
    truth = float(np.mean(theta**2))
    program = lambda s: float(np.mean((theta + v_norm * 5e-7 * np.random.default_rng(s).standard_normal(78)) ** 2))
    ref32 = min((program(s) for s in range(1, 51)), key=lambda x: abs(x - truth))
    spread = float(np.sqrt(np.mean([(program(s) - truth) ** 2 for s in range(100, 104)])))
    sigma = 2 * float(np.linalg.norm(theta * v_norm * 5e-7)) / 78
    path = tmp_path / "rotation.npz"
    np.savez(path, **{"loss/rot_loss": np.float32(ref32), "f64/loss/rot_loss": np.float64(truth)})
    return path, truth, sigma, program, spread


def test_flips_rule_judges_a_forward_loss_by_its_one_ulp_spread_not_the_references_luck(tmp_path):
    path, truth, sigma, program, spread = _rotation_loss_fixture(tmp_path)
    port = max((program(s) for s in range(200, 300)), key=lambda x: abs(x - truth))  # the worst of 100
    assert 2 * sigma < abs(port - truth) < 3 * sigma
    golden = Fixture(str(path), x64=False, rule="golden").check("loss/rot_loss", port)
    assert not golden.ok  # 20x the reference's lucky error, and the 1e-5 floor, are below it
    fx = Fixture(str(path), x64=False, rule="flips")
    assert not fx.check("loss/rot_loss", port).ok  # no spread measured: golden
    fx.loss_spread = {"loss/rot_loss": spread}
    check = fx.check("loss/rot_loss", port)
    assert check.ok and check.flips_ratio < 0.5, check.flips_why
    # A bug of the planted ones' size (1e-3 of the loss; fx43's 1.001 weight: 1.1e-3) fails;
    # float64 is left strict.
    assert not fx.check("loss/rot_loss", truth * (1 + 1e-3)).ok
    fx64 = Fixture(str(path), x64=True, rule="flips")
    fx64.loss_spread = fx.loss_spread
    assert not fx64.check("loss/rot_loss", port).ok


def test_loss_spread_is_rounding_sized_on_a_recorded_fixture():
    from helpers import FIXTURES
    from nanoaf2_jax.reference.parity_compute import loss_spread

    fx = Fixture(str(FIXTURES / "other_config.npz"), x64=False, rule="flips")
    spread = loss_spread(fx, draws=2)
    losses = [k for k in fx.keys if k.startswith("loss/")]
    assert set(losses) <= set(spread)
    # Nudging every weight by one ulp moves the losses (a clamped FAPE may not move at all), but
    # by rounding's size, not a bug's.
    assert any(spread[k] > 0 for k in losses)
    for k in losses:
        assert 0 <= spread[k] < 1e-5 * max(1.0, abs(float(fx.z[f"f64/{k}"]))), (k, spread[k])
