"""Training: the config dataclass (TrainConfig), the objective, optimiser and jitted step, the
loop with its run state and metrics, and checkpoints. Imports geometry/, diffusion/, model/ and data/; never the top-level configs.py."""
