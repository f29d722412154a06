"""`python -m nanoaf2_jax.prepare SRC... --out CACHE`: structure files into a training cache.

An entry point only: the command line is nanoaf2_jax/cli/prepare.py, the preparation
nanoaf2_jax/data/prepare.py.
"""

from .cli.prepare import main

if __name__ == "__main__":
    raise SystemExit(main())
