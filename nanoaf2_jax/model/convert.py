"""Lossless weight conversion between the reference's PyTorch state_dict and our Flax params.

Naming rule: a torch name `a.b.3.c.weight` is the Flax path `a / b_3 / c / <leaf>` (list and
Sequential indices join their parent's name), where the leaf is `kernel` for a Linear weight
(transposed: torch stores [out, in]), `scale` for a LayerNorm weight and `embedding` for an
Embedding weight; `bias` stays `bias`.
"""

import functools
import os

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from .model_config import ModelConfig
from .alphafold2 import init_params
from .torch_zip import write_torch_state_dict

_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


class ConversionError(ValueError):
    pass


def torch_name_to_path(name: str) -> tuple:
    """'pairformer_blocks.0.tri_out.ln.weight' -> ('pairformer_blocks_0', 'tri_out', 'ln', 'weight')."""
    out = []
    for part in name.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def path_to_torch_name(path: tuple) -> str:
    parts = []
    for p in path[:-1]:
        head, _, tail = p.rpartition("_")
        parts.append(f"{head}.{tail}" if head and tail.isdigit() else p)
    leaf = path[-1]
    parts.append("weight" if leaf in _WEIGHT_LEAVES else leaf)
    return ".".join(parts)


def template_params(config: ModelConfig):
    """Parameter shapes/dtypes of a model of this config, without allocating real weights."""
    # A fresh tree each call (the containers; the leaves are immutable), so no caller can alter
    # the cached one.
    return jax.tree_util.tree_map(lambda leaf: leaf, _template_params(config))


# Tracing the whole model's initialisation takes seconds, and sampling asks twice (the memory
# estimate counts the parameters, the checkpoint restores into the template): once per config.
@functools.lru_cache(maxsize=8)
def _template_params(config: ModelConfig):
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def state_dict_to_params(state_dict, config: ModelConfig, dtype=np.float32):
    """Reference state_dict (name -> array-like) -> Flax params. Strict: missing, unexpected or
    wrongly shaped tensors raise ConversionError naming them."""
    template = flatten_dict(template_params(config))
    by_torch_name = {path_to_torch_name(path): path for path in template}
    sd = {k: _to_numpy(v) for k, v in state_dict.items()}
    missing = sorted(set(by_torch_name) - set(sd))
    unexpected = sorted(set(sd) - set(by_torch_name))
    if missing or unexpected:
        raise ConversionError(_describe_mismatch(missing, unexpected))
    flat = {}
    for name, path in by_torch_name.items():
        value = sd[name]
        if path[-1] == "kernel":
            value = value.T
        expected = tuple(template[path].shape)
        if value.shape != expected:
            torch_shape = expected[::-1] if path[-1] == "kernel" else expected
            raise ConversionError(f"{name}: shape {tuple(sd[name].shape)}, expected {torch_shape} for this config")
        flat[path] = np.asarray(value, dtype=dtype)
    return unflatten_dict(flat)


def _reference_names(config: ModelConfig) -> set[str]:
    reference = ModelConfig(**config.reference_kwargs())
    return {path_to_torch_name(p) for p in flatten_dict(template_params(reference))}


def tensors_beyond_reference(config: ModelConfig, names=None) -> list[str]:
    """state_dict names of this config's model (or the given names of its state_dict, which
    saves tracing its template) that the reference's AlphaFold2(...) of the same size has no
    tensor for (a strict torch load_state_dict of our export would refuse them)."""
    ours = set(names) if names is not None else {path_to_torch_name(p) for p in flatten_dict(template_params(config))}
    return sorted(ours - _reference_names(config))


def layers_beyond_reference(config: ModelConfig, names=None) -> list[str]:
    """The layers those tensors belong to: a top-level module the reference lacks as a whole
    ('confidence_head'), else the submodule inside one it has ('diffusion_module.rotation_mlp')."""
    reference_tops = {name.split(".")[0] for name in _reference_names(config)}
    return sorted({".".join(name.split(".")[:2 if name.split(".")[0] in reference_tops else 1])
                   for name in tensors_beyond_reference(config, names)})


def params_to_state_dict(params) -> dict:
    """Flax params -> reference state_dict (name -> numpy array, torch layout)."""
    out = {}
    for path, value in flatten_dict(jax.device_get(params)).items():
        value = np.asarray(value)
        out[path_to_torch_name(path)] = np.ascontiguousarray(value.T) if path[-1] == "kernel" else value
    return out


def _to_numpy(v):
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _describe_mismatch(missing, unexpected, limit=10):
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
            parts.append(f"{label} tensors: {', '.join(names[:limit])}{more}")
    return "state_dict does not match the model config: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def load_state_dict(path) -> dict:
    """A reference checkpoint: `.pt` (needs torch; a {'model_state_dict': ...} wrapper is
    unwrapped) or `.npz` (names as keys). Returns name -> numpy array."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if path.endswith((".pt", ".pth")):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{path}: reading .pt files needs torch (pip install 'nanoaf2-jax[torch]')") from e
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "model_state_dict" in obj:
            obj = obj["model_state_dict"]
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: not a state_dict (found {type(obj).__name__})")
        return {k: _to_numpy(v) for k, v in obj.items()}
    raise ConversionError(f"{path}: unknown checkpoint format (expected .pt, .pth or .npz)")


def save_state_dict(state_dict: dict, path) -> str:
    """Write a reference-loadable state_dict: `.pt` as torch.save writes it (wrapped as the
    reference's train.py saves it; torch is not needed) or `.npz`. Written to a temporary name, then renamed."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            if path.endswith(".pt"):
                # torch.save's format, written without importing torch (model/torch_zip.py).
                write_torch_state_dict(state_dict, f)
            else:
                np.savez(f, **state_dict)
            f.flush()
            os.fsync(f.fileno())  # whole on disk before the rename makes it the file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
