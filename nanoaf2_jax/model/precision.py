"""Matrix-product precision of float32 work, chosen once per process by the command-line tools.

JAX's default float32 matrix product is not float32 everywhere: on NVIDIA GPUs since Ampere it
runs on tensor cores with TensorFloat-32 inputs (10-bit mantissa, ~1e-3 relative error), while
PyTorch, and so the reference, keeps full float32 unless told otherwise. The tools therefore
default to "highest" (true float32: the numbers the parity checks certify) and offer the faster
settings as an opt-in. On CPU, XLA computes float32 products in float32 whatever is asked.
"""

import argparse

import jax

# name -> what it means, for --help
MATMUL_PRECISIONS = {
    "highest": "full float32 products (the reference's numerics; default)",
    "tensorfloat32": "TF32 tensor cores on NVIDIA GPUs: faster, ~1e-3 relative error per product",
    "bfloat16": "bfloat16 inputs, float32 accumulation: fastest, ~1e-2 relative error per product",
}
DEFAULT_MATMUL_PRECISION = "highest"


def set_matmul_precision(name: str) -> None:
    if name not in MATMUL_PRECISIONS:
        raise ValueError(f"unknown matmul precision {name!r}; choose one of {', '.join(MATMUL_PRECISIONS)}")
    jax.config.update("jax_default_matmul_precision", name)


def add_matmul_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--matmul-precision", choices=list(MATMUL_PRECISIONS), default=DEFAULT_MATMUL_PRECISION,
        help="precision of float32 matrix products on accelerators: "
        + "; ".join(f"{k}: {v}" for k, v in MATMUL_PRECISIONS.items()),
    )
