"""`python -m nanoaf2_jax.parity FIXTURE.npz [--x64]`: see nanoaf2_jax/reference/parity.py."""

import sys

from ..reference.parity import main

if __name__ == "__main__":
    sys.exit(main())
