"""`python -m nanoaf2_jax.parity FIXTURE.npz [--x64] [--rule nonsmooth]`: the entry point of the
parity checker, which lives in nanoaf2_jax/reference/parity.py."""

import sys

from .reference.parity import main

if __name__ == "__main__":
    sys.exit(main())
