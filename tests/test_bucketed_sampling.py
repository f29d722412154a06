"""Sampling a sequence padded to a length bucket under a residue mask gives the structures of
the exact length (same noise, up to float rounding), so an evaluation of many lengths compiles
once per bucket rather than once per protein."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nanoaf2_jax.inference.predict import bucket_length, draw_noise, pad_noise, predict_codes
from nanoaf2_jax.inference.sampling import sample_jit, sampler_compilations
from nanoaf2_jax.model.convert import template_params
from nanoaf2_jax.model.model_config import MODEL_PRESETS

TINY = MODEL_PRESETS["tiny"]
# The reference's diffusion fields on the tiny sizes: the other branch of every masked path
# (no centring, sequence-only pLDDT head, rotations from the noisy frame).
TINY_REFERENCE_FIELDS = dataclasses.replace(
    TINY, center_coords=False, coord_scale=1.0, rotation_noise="reference", rot_sigma_max=1.5,
    rotation_update="rodrigues", translation_update="local", rotation_base="noisy",
    plddt_head="single", plddt_target="ca_distance")
STEPS = 6


def random_params(config, seed=0):
    # Non-zero everywhere (init zeroes output projections, which would hide a leak).
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (0.2 * rng.standard_normal(x.shape)).astype(np.float32), template_params(config))


@pytest.mark.parametrize("config", [TINY, TINY_REFERENCE_FIELDS], ids=["tiny", "reference_fields"])
def test_padded_masked_sampling_equals_exact_length(config):
    params = random_params(config)
    codes = np.random.default_rng(3).integers(0, 20, 21)
    exact = predict_codes(params, config, codes, (0, 7), 2, STEPS)
    for pad_to in (32,):
        padded = predict_codes(params, config, codes, (0, 7), 2, STEPS, pad_to=pad_to)
        for key in ("coords_N", "coords_CA", "coords_C", "plddt"):
            assert padded[key].shape == exact[key].shape
            assert np.all(np.isfinite(padded[key]))
            np.testing.assert_allclose(padded[key], exact[key], atol=2e-3, rtol=0, err_msg=f"{key} at {pad_to}")
    # The check can fail: padding without the mask changes the real residues' structure.
    unmasked = sample_jit(params, jnp.asarray(np.concatenate([codes, np.zeros(11, np.int64)]), jnp.int32),
                          pad_noise(draw_noise((0, 7), 2, 21, STEPS), 32), config)
    assert np.abs(np.asarray(unmasked["coords_CA"])[:, :21] - exact["coords_CA"]).max() > 0.5


def test_one_compilation_per_bucket():
    params = random_params(TINY, seed=1)
    before = sampler_compilations()
    for length in (17, 23, 30):
        assert bucket_length(length) == 32
        out = predict_codes(params, TINY, np.zeros(length, np.int32), (0, length), 1, 3,
                            pad_to=bucket_length(length))
        assert out["coords_CA"].shape == (1, length, 3)
    assert sampler_compilations() == before + 1
    assert [bucket_length(n) for n in (1, 32, 33, 150, 256, 257)] == [32, 32, 48, 160, 256, 288]


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "exact"])
def test_compile_sampler_prepares_the_program_predict_codes_runs(padded):
    """The evaluation compiles each bucket's sampler in a thread ahead of its proteins
    (compile_sampler); the sampling call after it must find that program, not compile its own."""
    from jax._src import monitoring

    compiled = []

    def listener(event, seconds, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(seconds)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        _check_compile_sampler(padded, compiled)
    finally:
        monitoring.unregister_event_duration_listener(listener)


def _check_compile_sampler(padded, compiled):
    from nanoaf2_jax.inference.predict import compile_sampler

    config = dataclasses.replace(TINY, sampling_eta=0.5)  # a program no other test compiles
    params = random_params(config, seed=4)
    length, pad_to = (19, 32) if padded else (32, None)
    before = len(compiled)
    compile_sampler(params, config, length, 2, 3, numbered=True, pad_to=pad_to)
    assert len(compiled) > before  # the listener sees compilations
    codes = np.random.default_rng(5).integers(0, 20, length)
    after_compile = len(compiled)
    out = predict_codes(params, config, codes, (0, 1), 2, 3, residue_index=np.arange(length) + 5,
                        pad_to=pad_to)
    assert len(compiled) == after_compile, "predict_codes compiled its sampler again"
    # The count sees a program this test did not prepare (so the check above can fail).
    predict_codes(params, config, codes, (0, 1), 3, 3, residue_index=np.arange(length), pad_to=pad_to)
    assert len(compiled) > after_compile  # 3 samples per call: another program
    assert out["coords_CA"].shape == (2, length, 3)
