"""Checks against the PyTorch reference: the parity checker on recorded fixtures and the
side-by-side comparison with the reference's own code. Imports everything up to inference/."""
