"""The weights' exponential moving average (training/ema.py, TrainConfig.optimisation.ema_decay):
off it is the optimiser itself; on, the average follows its recursion (across a resume too),
leaves the raw weights' trajectory untouched, and is what checkpoints hand to inference and what
the run exports."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import helix
from nanoaf2_jax.inference.output import describe_checkpoint
from nanoaf2_jax.model.convert import load_state_dict, params_to_state_dict
from nanoaf2_jax.training.ema import EmaState, averaged_params, sampling_params, with_params_ema

DECAY = 0.75  # far from 1, so that four steps move the average well away from the weights


def test_off_is_the_optimiser_itself():
    sgd = optax.sgd(0.1)
    assert with_params_ema(sgd, None) is sgd and with_params_ema(sgd, 0) is sgd
    params = {"w": jnp.ones(3)}
    assert averaged_params(sgd.init(params)) is None
    assert sampling_params(params, sgd.init(params)) is params
    with pytest.raises(ValueError, match="decay"):
        with_params_ema(sgd, 1.0)


def test_average_follows_its_recursion_and_leaves_the_updates_alone():
    sgd = optax.sgd(0.1)
    ema_opt = with_params_ema(sgd, DECAY)
    loss = lambda p: jnp.sum((p["w"] - jnp.arange(3.0)) ** 2)  # noqa: E731
    p_plain = p_ema = {"w": jnp.array([3.0, -1.0, 0.5])}
    s_plain, s_ema = sgd.init(p_plain), ema_opt.init(p_ema)
    expected = np.asarray(p_ema["w"])
    for _ in range(4):
        u, s_plain = sgd.update(jax.grad(loss)(p_plain), s_plain, p_plain)
        p_plain = optax.apply_updates(p_plain, u)
        u, s_ema = ema_opt.update(jax.grad(loss)(p_ema), s_ema, p_ema)
        p_ema = optax.apply_updates(p_ema, u)
        expected = DECAY * expected + (1 - DECAY) * np.asarray(p_ema["w"])
    np.testing.assert_array_equal(p_ema["w"], p_plain["w"])  # the raw trajectory is unchanged
    assert isinstance(s_ema, EmaState)
    np.testing.assert_allclose(averaged_params(s_ema)["w"], expected, rtol=1e-6)
    assert np.abs(expected - np.asarray(p_ema["w"])).max() > 0.1  # lags the weights


def _run(tmp_path, name, **options):
    from configs import get_preset
    from nanoaf2_jax.training.trainer import RunOptions, train

    config = get_preset("tiny").override(
        ema_decay=DECAY, epochs=4, log_every=1, checkpoint_every_epochs=1, keep_checkpoints=4,
        tensorboard=False, output_dir=str(tmp_path / name))
    return train(config, RunOptions(progress=False, **options), proteins=[helix(24)])


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_a_run_keeps_the_average_checkpoints_and_exports_it_and_resumes_it_exactly(tmp_path):
    """A run stopped after 2 steps and resumed to 4, checkpointed every step: the saved averages
    follow the recursion across the resume too (a resume that lost or reset the average breaks
    it at step 3), inference loads the last one, and the run exports it."""
    from nanoaf2_jax.training.checkpoint import TrainCheckpointer, load_for_inference

    _run(tmp_path, "run", max_steps=2)
    result = _run(tmp_path, "run", resume=True)
    ckpt = TrainCheckpointer(tmp_path / "run", keep=4)
    try:
        steps = ckpt.steps()
        assert steps == [1, 2, 3, 4]
        saved = {s: ckpt.manager.restore(s) for s in steps}
    finally:
        ckpt.close()
    for prev, step in zip(steps, steps[1:]):  # ema_t = d · ema_{t-1} + (1 - d) · params_t
        for e_prev, e, p in zip(_leaves(saved[prev].ema_params), _leaves(saved[step].ema_params),
                                _leaves(saved[step].params)):
            np.testing.assert_allclose(e, DECAY * e_prev + (1 - DECAY) * p, rtol=1e-5, atol=1e-7)
    last = saved[steps[-1]]
    assert max(np.abs(e - p).max() for e, p in zip(_leaves(last.ema_params), _leaves(last.params))) > 1e-4
    # The checkpoint's item is the opt_state's average, and inference loads it.
    for e, o in zip(_leaves(last.ema_params), _leaves(last.opt_state["params"])):
        np.testing.assert_array_equal(e, o)
    params, _, info = load_for_inference(tmp_path / "run")
    assert info["weights"] == "ema"
    assert describe_checkpoint(tmp_path / "run", info).endswith("step 4, EMA weights)")  # files' headers
    for got, want in zip(_leaves(params), _leaves(last.ema_params)):
        np.testing.assert_array_equal(got, want)
    exported = load_state_dict(result.final_model)
    for name, value in params_to_state_dict(last.ema_params).items():
        np.testing.assert_array_equal(np.asarray(exported[name]), np.asarray(value), err_msg=name)


def test_the_flag_sets_the_decay_and_a_decay_outside_0_1_is_refused():
    import train as train_cli
    from nanoaf2_jax.training.train_config import ConfigError

    parse = lambda *argv: train_cli.resolve_config(train_cli.build_parser().parse_args(list(argv)))  # noqa: E731
    assert parse("--preset", "chains").optimisation.ema_decay is None  # presets: off
    assert parse("--preset", "chains", "--ema-decay", "0.999").optimisation.ema_decay == 0.999
    assert parse("--preset", "tiny", "--ema-decay", "none").optimisation.ema_decay is None
    with pytest.raises(ConfigError, match="ema_decay"):
        parse("--preset", "tiny", "--ema-decay", "1.5")
