"""Writing a prediction run: one structure file per sample, JSON summaries, text tables and
progress lines.

Everything is written into a hidden staging directory next to the output directory and moved
into place only once the whole run has succeeded, so a failed or interrupted run leaves nothing
partial under the output name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .records import InputError, Record
from .structure_io import atomic_write_text, write_backbone


# Files that mark a directory as holding an earlier run's predictions.
_RESULT_FILES = ("summary.json", "evaluation.json", "evaluation.md")
_STRUCTURE_GLOBS = ("*_sample*.pdb", "*_sample*.cif")


def earlier_results(out: Path) -> list[str]:
    """Names of an earlier prediction run's files in `out` (summaries, sample structures)."""
    if not out.is_dir():
        return []
    found = [name for name in _RESULT_FILES if (out / name).exists()]
    structures = sorted({p.name for g in _STRUCTURE_GLOBS for p in out.glob(g)})
    if structures:
        found.append(f"{len(structures)} structure file(s) such as {structures[0]}")
    return found


@contextlib.contextmanager
def staged_output(out_dir, overwrite: bool = False):
    """Yield a fresh hidden directory next to `out_dir`; on success move its files into
    `out_dir` (a rename when out_dir does not exist yet), on failure delete it. An `out_dir`
    already holding predictions is refused unless `overwrite` (then same-named files are
    replaced)."""
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out}: exists and is not a directory")
    earlier = earlier_results(out)
    if earlier and not overwrite:
        raise InputError(f"output {out}: already holds predictions ({', '.join(earlier)}); "
                         "pass --overwrite to replace them, or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as err:
        raise InputError(f"output {out}: cannot create a directory there ({err.strerror})") from err
    try:
        yield stage
        _publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out: Path) -> None:
    # mkdtemp makes the directory private (0700); give it the permissions mkdir would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    try:
        os.rename(stage, out)  # atomic; fails if out exists (non-empty) -> move file by file
        return
    except OSError:
        if not out.is_dir():
            raise
    names = sorted(p.name for p in stage.iterdir())
    # summary/evaluation files last: once they are there, every file they list is too.
    names.sort(key=lambda n: n.endswith((".json", ".md")))
    for name in names:
        os.replace(stage / name, out / name)


def describe_checkpoint(path, info: dict) -> str:
    """The path as given, plus the step directory and step a run directory resolved to."""
    source, step = info.get("source"), info.get("step")
    details = [str(source)] if source and os.path.abspath(str(source)) != os.path.abspath(str(path)) else []
    if step is not None:
        details.append(f"step {step}")
    if info.get("weights") == "ema":  # the run kept an average of its weights (training/ema.py)
        details.append("EMA weights")
    if info.get("preset") and info.get("kind") == "state_dict":
        details.append(f"preset {info['preset']}")
    return f"{path} ({', '.join(details)})" if details else str(path)


def structure_header(record: Record, checkpoint, seed: int, steps: int, k: int, n: int) -> list[str]:
    # Short lines: PDB REMARKs are 80 columns and a wrapped key=value is hard to read.
    return [f"nanoaf2-jax prediction of {record.name} ({record.length} residues)",
            f"sample={k} (0-based, of {n}) seed={seed} steps={steps}",
            f"checkpoint={checkpoint}"]


def write_samples(stage: Path, record: Record, result: dict, fmt: str, header_args: dict,
                  stem: str | None = None, indices=None, first: int = 0,
                  total: int | None = None) -> list[str]:
    """One structure file per sample: {record}_sample{k}.{fmt}. Returns the file names.
    first: the run's index of the result's row 0 (results that come in chunks); total: N."""
    n = result["coords_CA"].shape[0] if total is None else total
    names = []
    for k in range(result["coords_CA"].shape[0]) if indices is None else indices:
        name = f"{stem or record.name}_sample{first + k}.{fmt}"
        write_backbone(stage / name, record.codes, result["coords_N"][k], result["coords_CA"][k],
                       result["coords_C"][k], plddt=result["plddt"][k],
                       header_lines=structure_header(record, k=first + k, n=n, **header_args), fmt=fmt)
        names.append(name)
    return names


def json_safe(obj):
    """NaN/inf -> None and numpy scalars -> Python, so the JSON is strict and portable."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


def format_value(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress goes to stderr so stdout carries only the result table."""
    print(message, file=sys.stderr, flush=True)
