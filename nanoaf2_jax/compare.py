"""`python -m nanoaf2_jax.compare`: check and time this port against the PyTorch reference.

An entry point only: the command line is nanoaf2_jax/cli/compare.py, the comparison
nanoaf2_jax/reference/compare.py and compare_timing.py.
"""

from .cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
