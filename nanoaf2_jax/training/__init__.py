"""Training: the config dataclass, the objective, optimiser and jitted step, the loop, and
checkpoints. Imports geometry/, diffusion/, model/ and data/; never the top-level configs.py."""
