"""Training data: structure files -> Protein backbones (parsing, downloading) -> padded
batches. Imports only geometry/ of the package."""
