"""The tools pin float32 matrix products to full precision unless asked otherwise.

On CPU the setting changes no number, so these tests check that it reaches the compiled
programs: the product precision XLA is asked for is written in the lowered module."""

import jax
import jax.numpy as jnp
import pytest

from nanoaf2_jax.model.layers import matmul_last
from nanoaf2_jax.model.precision import DEFAULT_MATMUL_PRECISION, set_matmul_precision


@pytest.fixture
def restore_precision():
    saved = jax.config.jax_default_matmul_precision
    yield
    jax.config.update("jax_default_matmul_precision", saved)


def lowered_dot(x, w):
    return jax.jit(matmul_last).lower(x, w).as_text()


@pytest.mark.parametrize("name, marker", [("highest", "HIGHEST"), ("tensorfloat32", "HIGH"), ("bfloat16", "DEFAULT")])
def test_setting_reaches_the_model_products(restore_precision, name, marker):
    set_matmul_precision(name)
    text = lowered_dot(jnp.ones((2, 5, 8)), jnp.ones((8, 3)))
    assert f"precision = [{marker}, {marker}]" in text


def test_unknown_precision_is_refused_with_the_choices(restore_precision):
    with pytest.raises(ValueError, match="highest, tensorfloat32, bfloat16"):
        set_matmul_precision("float16")


def test_command_lines_default_to_full_precision():
    import train
    from nanoaf2_jax.cli import sample

    assert DEFAULT_MATMUL_PRECISION == "highest"
    assert train.build_parser().parse_args([]).matmul_precision == "highest"
    args = sample.build_parser().parse_args(["--checkpoint", "x", "--sequence", "ACD"])
    assert args.matmul_precision == "highest"
    args = sample.build_parser().parse_args(["--checkpoint", "x", "--sequence", "ACD",
                                             "--matmul-precision", "tensorfloat32"])
    assert args.matmul_precision == "tensorfloat32"
