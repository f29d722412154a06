"""`python -m nanoaf2_jax.compare`: check and time this port against the PyTorch reference.

An entry point only; the comparison is nanoaf2_jax/reference/compare.py.
"""

from .reference.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
