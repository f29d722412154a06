"""GPU-ready before a GPU is lent: the trainer's step (float32 and bf16) and the sampler lower for
CUDA on this CPU machine (`jax.export`, platforms=("cuda",)), so a missing CUDA lowering rule or a
custom call JAX cannot serialise shows here, not in the first minutes of a GPU session
(benchmarks/gpu_check.sh is what runs there). Tiny model, abstract shapes: nothing is compiled
or run, only traced and lowered."""

import jax
import jax.numpy as jnp
import pytest
from jax import export

from nanoaf2_jax.data.batching import empty_batch
from nanoaf2_jax.inference.sampling import SampleNoise, sample_jit
from nanoaf2_jax.model.alphafold2 import init_params
from nanoaf2_jax.model.model_config import MODEL_PRESETS
from nanoaf2_jax.training.mixed_precision import compute_dtype_of
from nanoaf2_jax.training.parallel import DataParallel, make_parallel_train_step
from nanoaf2_jax.training.train_step import OptimConfig, make_optimizer

TINY = MODEL_PRESETS["tiny"]
L = 16


def _abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


@pytest.fixture(scope="module")
def params():
    return jax.eval_shape(lambda key: init_params(TINY, key), jax.random.PRNGKey(0))


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_the_train_step_lowers_for_cuda(params, precision):
    optimizer = make_optimizer(OptimConfig(total_steps=10))
    opt_state = jax.eval_shape(optimizer.init, params)
    batch = _abstract(empty_batch(2, L, file_numbering=True))
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    step = make_parallel_train_step(TINY, optimizer, DataParallel(), attention_mask=True,
                                    compute_dtype=compute_dtype_of(precision), donate=False,
                                    total_steps=10)
    exported = export.export(step, platforms=("cuda",))(
        params, opt_state, batch, key, jax.ShapeDtypeStruct((), jnp.int32))
    assert exported.platforms == ("cuda",)
    new_params, new_opt_state, metrics = jax.tree_util.tree_unflatten(exported.out_tree,
                                                                      exported.out_avals)
    assert _abstract(new_params) == _abstract(params)  # float32 parameters in both precisions
    assert _abstract(new_opt_state) == _abstract(opt_state)
    assert {"loss", "grad_norm"} <= set(metrics)
    text = exported.mlir_module()
    assert ("xbf16>" in text) == (precision == "bf16")  # bf16 reaches the GPU program


def test_the_sampler_lowers_for_cuda(params):
    n, steps = 2, 4
    noise = SampleNoise(jax.ShapeDtypeStruct((n, L), jnp.float32),
                        jax.ShapeDtypeStruct((n, L, 3), jnp.float32),
                        jax.ShapeDtypeStruct((n, L, 3), jnp.float32),
                        jax.ShapeDtypeStruct((steps - 1, n, L, 3), jnp.float32))
    exported = export.export(sample_jit, platforms=("cuda",))(
        params, jax.ShapeDtypeStruct((L,), jnp.int32), noise, TINY)
    assert exported.platforms == ("cuda",)
    out = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
    assert out["coords_CA"].shape == (n, L, 3) and out["plddt"].shape == (n, L)
    assert "stablehlo.while" in exported.mlir_module()  # the reverse steps stay one lax.scan
