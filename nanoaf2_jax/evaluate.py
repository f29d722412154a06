"""`python -m nanoaf2_jax.evaluate`: score a checkpoint on known structures.

An entry point only: the command line is nanoaf2_jax/cli/evaluate.py, the evaluation
nanoaf2_jax/evaluation/evaluate.py.
"""

from .cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
