"""Write a state_dict as PyTorch's `.pt` file (the zip format of torch.save since 1.6) without
importing torch.

Why: importing torch takes 2-4 s on this CPU, and `train.py` paid it at every run's end only to
write the final weights; a test suite that starts ~50 training processes paid it ~50 times. The
format is small and stable: a zip archive (stored, not compressed) of `data.pkl`, a protocol-2
pickle of {'model_state_dict': {name: tensor}} whose tensors are
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` with each
storage a persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel), and one record
`data/<key>` per storage holding its raw little-endian bytes, aligned to 64 bytes as torch
aligns them. `torch.load` (weights_only or not) reads it as a file torch.save wrote
(tests/test_convert.py checks both against torch).
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zipfile

import numpy as np

# numpy dtype -> torch storage class name (the legacy typed-storage names torch.save writes)
_STORAGE = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
_ALIGNMENT = 64


def _op_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _op_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)  # BININT2
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)  # BININT
    raise ValueError(f"dimension {value} too large for this writer")


def _op_int_tuple(values) -> bytes:
    return b"(" + b"".join(_op_int(int(v)) for v in values) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def state_dict_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """data.pkl for {'model_state_dict': arrays}; storage i holds the i-th array."""
    out = [b"\x80\x02", b"}", _op_str("model_state_dict"), b"}", b"("]  # PROTO 2, dicts, MARK
    for key, (name, array) in enumerate(arrays.items()):
        shape = array.shape
        strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
        out += [
            _op_str(name), _global("torch._utils", "_rebuild_tensor_v2"), b"(",
            b"(", _op_str("storage"), _global("torch", _STORAGE[array.dtype]), _op_str(str(key)),
            _op_str("cpu"), _op_int(array.size), b"t", b"Q",  # the persistent id, BINPERSID
            _op_int(0), _op_int_tuple(shape), _op_int_tuple(strides), b"\x89",  # NEWFALSE
            _global("collections", "OrderedDict"), b")R",  # OrderedDict() for the hooks
            b"tR",  # the arguments' TUPLE, REDUCE
        ]
    out += [b"u", b"s", b"."]  # SETITEMS into the inner dict, SETITEM into the outer, STOP
    return b"".join(out)


def _aligned_info(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """A ZipInfo whose data starts on a 64-byte boundary (padding in an extra field, as torch)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = zf.fp.tell() + 30 + len(name.encode())
    pad = (-(start + 4)) % _ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    return info


def write_torch_state_dict(state_dict: dict, file, archive: str = "archive") -> None:
    """Write {'model_state_dict': state_dict} (name -> array) to an open binary file as torch.save
    would. An array of a dtype torch has no storage for here is a ValueError naming it."""
    if sys.byteorder != "little":
        raise ValueError("the .pt writer assumes a little-endian machine")
    arrays = {}
    for name, value in state_dict.items():
        array = np.array(value, order="C", copy=None)  # keeps 0-d arrays 0-d (ascontiguousarray does not)
        if array.dtype not in _STORAGE:
            raise ValueError(f"{name}: dtype {array.dtype} has no torch storage in this writer")
        arrays[name] = array
    pickle_bytes = state_dict_pickle(arrays)
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_aligned_info(zf, f"{archive}/data.pkl"), pickle_bytes)
        zf.writestr(_aligned_info(zf, f"{archive}/.format_version"), b"1")
        zf.writestr(_aligned_info(zf, f"{archive}/.storage_alignment"), str(_ALIGNMENT).encode())
        zf.writestr(_aligned_info(zf, f"{archive}/byteorder"), b"little")
        digest = hashlib.sha1(pickle_bytes)
        for key, array in enumerate(arrays.values()):
            data = array.tobytes()
            digest.update(data)
            zf.writestr(_aligned_info(zf, f"{archive}/data/{key}"), data)
        zf.writestr(_aligned_info(zf, f"{archive}/version"), b"3\n")
        zf.writestr(_aligned_info(zf, f"{archive}/.data/serialization_id"), digest.hexdigest().encode())
