"""`python -m nanoaf2_jax.evaluate`: score a checkpoint on known structures.

An entry point only; the evaluation is nanoaf2_jax/evaluation/evaluate.py.
"""

from .evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
