"""`python -m nanoaf2_jax.fit_identity_prior`: fit a checkpoint's identity prior from its
evaluations. An entry point only: the command line is nanoaf2_jax/cli/fit_identity_prior.py."""

from .cli.fit_identity_prior import main

if __name__ == "__main__":
    raise SystemExit(main())
