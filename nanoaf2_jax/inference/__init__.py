"""Inference: reverse diffusion in one compiled call, sequences in and structure files out,
and the memory estimate. Imports geometry/, diffusion/, model/, data/ and training/ (the
objective's apply helper and checkpoint loading)."""
