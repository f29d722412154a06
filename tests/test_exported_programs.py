"""Traced programs kept on disk (nanoaf2_jax/compilation/exported_programs.py): a program read back computes
what `jax.jit` computes, bit for bit; any change of settings, shapes or a damaged file gives a
fresh trace; with the cache off nothing is kept; the sampler's kept program samples what
sample_jit samples. (That a later `train.py` process reads the step back, and resumes exactly
with it, is asserted in tests/test_training.py's kill -9 test.)"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.compilation import exported_programs
from nanoaf2_jax.compilation.exported_programs import PREFIX, CachedJit, cached_jit


class _State(NamedTuple):  # a custom pytree node, as the optimiser's state is
    count: jax.Array
    moment: dict


def _update(params, state, batch, scale):
    g = jax.grad(lambda p: jnp.sum(jnp.tanh(batch @ p["w"] + p["b"]) ** 2))(params)
    moment = jax.tree_util.tree_map(lambda m, x: 0.9 * m + x, state.moment, g)
    new = jax.tree_util.tree_map(lambda p, m: p - scale * m, params, moment)
    return new, _State(state.count + 1, moment), {"norm": jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(g)))}


def _args(rows=5, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.zeros(4, jnp.float32)}
    state = _State(jnp.int32(0), jax.tree_util.tree_map(jnp.zeros_like, params))
    return params, state, jnp.asarray(rng.normal(size=(rows, 3)), jnp.float32), np.float32(0.1)


@pytest.fixture
def keep_in(tmp_path):
    before = exported_programs.directory()
    exported_programs.set_directory(tmp_path)
    yield tmp_path
    exported_programs.set_directory(before)


def _kept(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(PREFIX))


def _assert_identical(got, want):
    jax.tree_util.tree_map(lambda g, w: np.testing.assert_array_equal(np.asarray(g), np.asarray(w)),
                           got, want)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)


def test_read_back_program_computes_what_jit_computes_and_changes_give_new_entries(keep_in):
    want = jax.jit(_update)(*_args())
    first = cached_jit(_update, "probe", "key-a", donate_argnums=(0, 1))
    assert isinstance(first, CachedJit)
    _assert_identical(first(*_args()), want)
    assert (first.exported, first.read) == (1, 0) and len(_kept(keep_in)) == 1

    # A new process's view: a fresh object with the same name and settings reads the file.
    second = cached_jit(_update, "probe", "key-a", donate_argnums=(0, 1))
    _assert_identical(second(*_args()), want)
    assert (second.exported, second.read) == (0, 1) and len(_kept(keep_in)) == 1
    second(*_args(seed=3))  # same signature, other values: the same program, nothing new
    assert second._cache_size() == 1 and len(_kept(keep_in)) == 1

    # Another setting, another shape: each a new entry, never the old program.
    other = cached_jit(_update, "probe", "key-b")
    _assert_identical(other(*_args()), want)
    assert other.exported == 1 and len(_kept(keep_in)) == 2
    _assert_identical(second(*_args(rows=7)), jax.jit(_update)(*_args(rows=7)))
    assert second.exported == 1 and second._cache_size() == 2 and len(_kept(keep_in)) == 3

    # A damaged file (a writer killed mid-way) is traced again and rewritten.
    for name in _kept(keep_in):
        path = keep_in / name
        path.write_bytes(path.read_bytes()[:100])
    again = cached_jit(_update, "probe", "key-a")
    _assert_identical(again(*_args()), want)
    assert (again.exported, again.read) == (1, 0)
    last = cached_jit(_update, "probe", "key-a")  # and the rewritten file reads back
    _assert_identical(last(*_args()), want)
    assert (last.exported, last.read) == (0, 1)
    assert len(_kept(keep_in)) == 3 and not [p for p in keep_in.iterdir() if ".tmp-" in p.name]


def test_lower_compiles_the_program_a_call_runs(keep_in):
    fn = cached_jit(_update, "probe", "key-a")
    compiled = fn.lower(*_args()).compile()
    _assert_identical(jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(jax.eval_shape(_update, *_args())),
        compiled(*jax.tree_util.tree_leaves(_args()))), jax.jit(_update)(*_args()))


def test_cache_off_is_plain_jit_and_keeps_nothing(tmp_path):
    before = exported_programs.directory()
    exported_programs.set_directory(None)
    try:
        fn = cached_jit(_update, "probe", "key-a")
        assert not isinstance(fn, CachedJit)
        _assert_identical(fn(*_args()), jax.jit(_update)(*_args()))
    finally:
        exported_programs.set_directory(before)


def test_kept_sampler_samples_what_sample_jit_samples(keep_in):
    from nanoaf2_jax.inference import sampling
    from nanoaf2_jax.inference.sampling import draw_sample_noise, sample_jit, sampler_for
    from nanoaf2_jax.model.alphafold2 import init_params
    from nanoaf2_jax.model.model_config import MODEL_PRESETS

    config = MODEL_PRESETS["tiny"]
    params = init_params(config, jax.random.PRNGKey(0))
    codes = jnp.asarray(np.arange(9) % 20, jnp.int32)
    noise = draw_sample_noise(jax.random.PRNGKey(1), 2, 9, 4, jnp.float32)
    mask = jnp.arange(9) < 7
    want = sample_jit(params, codes, noise, config, None, mask)
    kept = sampler_for(config)
    assert isinstance(kept, CachedJit) and sampler_for(config) is kept
    _assert_identical(kept(params, codes, noise, None, mask), want)
    sampling._KEPT_SAMPLERS.clear()  # a new process's view: read back from the directory
    again = sampler_for(config)
    _assert_identical(again(params, codes, noise, None, mask), want)
    assert (kept.exported, again.exported, again.read) == (1, 0, 1)


def test_kept_initial_state_is_the_jitted_one_and_is_read_back(keep_in, tmp_path, monkeypatch):
    """A fresh run's weights and optimiser state (run_state.RunState.initial_state) come from a
    kept program when the trainer gives a key: the same arrays as jax.jit's, and a later run
    reads the program back instead of tracing the model's initialisation."""
    import logging

    from configs import get_preset
    from nanoaf2_jax.training.ema import with_params_ema
    from nanoaf2_jax.training.run_state import RunState
    from nanoaf2_jax.training.train_step import OptimConfig, make_optimizer

    config = get_preset("tiny").override(ema_decay=0.9)  # the EMA's state too
    optimizer = with_params_ema(make_optimizer(OptimConfig()), 0.9)

    def initial(name, key):
        state = RunState(config, optimizer, [], 1, 1, tmp_path / name, logging.getLogger("t"),
                         program_key=key)
        try:
            return state.initial_state(resume=False)[:2]
        finally:
            state.close()

    want = initial("plain", None)
    assert not [n for n in _kept(keep_in) if "initial-state" in n]
    _assert_identical(initial("kept", "key"), want)
    assert len([n for n in _kept(keep_in) if "initial-state" in n]) == 1

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced again instead of reading the kept program back")

    monkeypatch.setattr(jax.export, "export", no_tracing)
    _assert_identical(initial("again", "key"), want)
