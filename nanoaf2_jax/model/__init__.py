"""The Flax model: its config, layers, Pairformer trunk, SE(3) denoiser, the whole AlphaFold2,
its losses, the reference state_dict <-> params conversion and the matmul precision setting.
Imports only geometry/ and diffusion/ of the package."""
