"""The PyTorch reference, loaded for a side-by-side comparison: its model.py imported from the
reference's own folder at run time (none of its code is part of this package), its random
draws replaced by pre-drawn numbers, and its weights set to random non-zero values."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path

import numpy as np


class Unavailable(RuntimeError):
    """torch or the reference's model.py is missing."""


# ---------------------------------------------------------------------------------------------
# Loading the reference
# ---------------------------------------------------------------------------------------------


def import_torch():
    try:
        import torch
    except ImportError:
        raise Unavailable(
            "the comparison needs PyTorch: pip install 'nanoaf2-jax[torch]' "
            "(or pip install torch, the CPU build is enough)"
        ) from None
    return torch


def load_reference(reference_dir) -> object:
    """Import DIR/model.py as a fresh module (not added to sys.modules under a common name)."""
    path = Path(reference_dir) / "model.py"
    if not path.is_file():
        raise Unavailable(
            f"{path}: no such file. --reference-dir must be the reference's alphafold2/ folder "
            "(the one with model.py), e.g. a checkout of github.com/sungsoo-ahn/nano-protein-ais"
        )
    import_torch()
    spec = importlib.util.spec_from_file_location("nanoaf2_reference_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "AlphaFold2"):
        raise Unavailable(f"{path} defines no AlphaFold2 class: is this the reference's model.py?")
    return module


class _ScriptedTorch:
    """Stands in for the `torch` module inside the reference's model.py: everything is torch's,
    except that rand / randn / randn_like return the next pre-drawn array (shape-checked)."""

    def __init__(self, torch, draws):
        self._torch = torch
        self._draws = list(draws)
        self.used = 0

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def _next(self, shape, like=None):
        if self.used >= len(self._draws):
            raise RuntimeError(f"the reference drew more random numbers than scripted ({self.used})")
        value = np.asarray(self._draws[self.used])
        self.used += 1
        shape = tuple(int(s) for s in shape)
        if value.shape != shape:
            raise RuntimeError(f"scripted draw {self.used}: reference asked for shape {shape}, have {value.shape}")
        dtype = like.dtype if like is not None else self._torch.get_default_dtype()
        return self._torch.from_numpy(np.ascontiguousarray(value)).to(dtype)

    @staticmethod
    def _shape(args):
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            return tuple(args[0])
        return tuple(args)

    def rand(self, *size, **kwargs):
        return self._next(self._shape(size))

    def randn(self, *size, **kwargs):
        return self._next(self._shape(size))

    def randn_like(self, tensor, **kwargs):
        return self._next(tuple(tensor.shape), like=tensor)


@contextlib.contextmanager
def scripted_draws(ref_module, draws):
    """Within the block, the reference's model.py draws `draws` in order instead of random numbers."""
    torch = import_torch()
    proxy = _ScriptedTorch(torch, draws)
    original = ref_module.torch
    ref_module.torch = proxy
    try:
        yield proxy
    finally:
        ref_module.torch = original
    if proxy.used != len(proxy._draws):
        raise RuntimeError(f"the reference used {proxy.used} of {len(proxy._draws)} scripted draws")


def randomise_weights(ref_model, seed: int = 0):
    """Every parameter set to a non-zero random value of a sensible scale: Linear weights
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (so activations stay O(1)), biases N(0, 0.1²),
    LayerNorm weights 1 + N(0, 0.1²), embeddings N(0, 1); the zero-initialised AdaLN.proj and
    DiffusionModule.output_proj included. Values drawn with numpy, so reproducible anywhere."""
    torch = import_torch()
    rng = np.random.default_rng(seed)
    modules = dict(ref_model.named_modules())
    with torch.no_grad():
        for name, p in ref_model.named_parameters():
            owner = modules[name.rpartition(".")[0]]
            shape = tuple(p.shape)
            if isinstance(owner, torch.nn.LayerNorm):
                value = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
            elif isinstance(owner, torch.nn.Embedding):
                value = rng.standard_normal(shape)
            elif name.endswith("bias"):
                value = 0.1 * rng.standard_normal(shape)
            else:
                bound = 1.0 / math.sqrt(shape[-1])
                value = rng.uniform(-bound, bound, shape)
            value[value == 0] = 1e-3
            p.copy_(torch.from_numpy(value).to(p.dtype))
