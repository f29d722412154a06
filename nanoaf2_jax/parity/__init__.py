"""`python -m nanoaf2_jax.parity`: check this port against numbers recorded from the reference.

An entry point only (run as `python -m`, see __main__.py); the checker is
nanoaf2_jax/reference/parity.py. A package rather than a parity.py file so that the path
nanoaf2_jax/parity.py, which the checker had before the move, is free: git then follows that
file to reference/parity.py when merging changes made to it elsewhere.
"""
