"""Sequences in, backbone structures out: the machinery behind `python sample.py`.

Input parsing (sequences, FASTA), checkpoint loading, the memory check, batched sampling (one
compiled call per sequence draws all N samples, the trunk running once), scoring against a
native structure, and writing the results: one structure file per sample, `summary.json` and a
printed table. Everything is written into a hidden staging directory next to the output
directory and moved into place only once the whole run has succeeded, so a failed or
interrupted run leaves nothing partial under the output name.

Randomness: sample k of record i (both 0-based, records in input order) is drawn from a numpy
generator seeded with (seed, i, k). Sample k of a record is therefore the same structure whatever
--num-samples is, and the same seed always gives the same structures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import memory
from ..model.model_config import ModelConfig
from ..data.structures import Protein, parse_structure_spec
from ..evaluation.metrics import ca_rmsd, lddt_ca, tm_score
from ..model.precision import add_matmul_precision_argument, set_matmul_precision
from ..geometry.residue_constants import AA_TO_IDX, AA_VOCAB, UNK_IDX, decode_sequence
from .sampling import NUM_SAMPLE_STEPS, SampleNoise, sample_jit
from .structure_io import atomic_write_text, write_backbone

ALLOWED_LETTERS = AA_VOCAB + "X"
# Record names become file names: anything but these characters is replaced by '_'.
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SEED = 2**32 - 1


class InputError(ValueError):
    """Bad user input (sequence, FASTA file, checkpoint, option); the message says which."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One sequence to predict. `codes` are the model's residue codes (X -> UNK_IDX)."""

    name: str
    codes: np.ndarray

    @property
    def length(self) -> int:
        return int(self.codes.shape[0])

    @property
    def sequence(self) -> str:
        return decode_sequence(self.codes)


# ---------------------------------------------------------------------------------------------
# Sequence input
# ---------------------------------------------------------------------------------------------


def parse_sequence(text: str, name: str, where: str = "") -> np.ndarray:
    """Residue codes of a one-letter sequence. Case and whitespace (line breaks included) are
    ignored; any other character than the 20 amino acids and X is an error naming the record,
    its 1-based position among the residues and the character. `where` (e.g. 'in FILE')
    is added to messages."""
    residues = "".join(text.split()).upper()
    suffix = f" {where}" if where else ""
    if not residues:
        raise InputError(f"record {name!r}{suffix} is an empty sequence")
    for position, letter in enumerate(residues, start=1):
        if letter not in ALLOWED_LETTERS:
            raise InputError(
                f"record {name!r}{suffix}: {letter!r} at position {position} is not an amino "
                f"acid (allowed: {ALLOWED_LETTERS}, any case)")
    return np.array([AA_TO_IDX.get(a, UNK_IDX) for a in residues], dtype=np.int32)


def safe_name(header_name: str, fallback: str) -> str:
    """A record name usable in file names: 'sp|P69905|HBA_HUMAN' -> 'sp_P69905_HBA_HUMAN'."""
    name = _UNSAFE_NAME_CHARS.sub("_", header_name).strip("._")
    return name or fallback


def parse_fasta_text(text: str, source: str) -> list[Record]:
    """Records of a FASTA text. The name is the header's first word (made file-name safe).
    Blank lines are skipped; text before the first '>' means this is not FASTA."""
    records = []
    header = None  # (name, line number) of the record being read
    chunks: list[str] = []

    def finish():
        if header is not None:
            name, line_no = header
            where = f"(header on line {line_no} of {source})"
            records.append(Record(name, parse_sequence("".join(chunks), name, where)))

    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">"):
            finish()
            words = stripped[1:].split()
            header = (safe_name(words[0] if words else "", f"record{len(records) + 1}"), line_no)
            chunks = []
        elif header is None:
            raise InputError(f"{source}: not a FASTA file (line {line_no} comes before any "
                             f"'>' header line)")
        else:
            chunks.append(stripped)
    finish()
    if not records:
        raise InputError(f"{source}: FASTA file has no records (no '>' header line)")
    return records


def read_fasta(path) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: FASTA file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a FASTA file (not text)") from None
    return parse_fasta_text(text, str(path))


def unique_names(records: list[Record]) -> list[Record]:
    """Rename repeated names ('a', 'a' -> 'a', 'a_2') so no record overwrites another's files."""
    seen: set[str] = set()
    out = []
    for rec in records:
        name, k = rec.name, 2
        while name in seen:
            name, k = f"{rec.name}_{k}", k + 1
        seen.add(name)
        out.append(rec if name == rec.name else dataclasses.replace(rec, name=name))
    return out


def records_from_inputs(sequences=(), fasta_files=()) -> list[Record]:
    """FASTA records first (file by file), then --sequence records named seq1, seq2, ..."""
    records = [rec for path in fasta_files for rec in read_fasta(path)]
    records += [Record(f"seq{i}", parse_sequence(s, f"seq{i}", "(--sequence)"))
                for i, s in enumerate(sequences, start=1)]
    return unique_names(records)


def record_from_protein(protein: Protein) -> Record:
    return Record(safe_name(protein.name, "native"), np.asarray(protein.sequence, np.int32))


# ---------------------------------------------------------------------------------------------
# Checkpoint
# ---------------------------------------------------------------------------------------------


def load_model(checkpoint, preset: str | None = None):
    """(params, ModelConfig, info) from an orbax run or step directory, or a reference
    state_dict (.pt/.pth/.npz, whose config comes from `preset`). Any failure is an
    InputError saying what is wrong with which checkpoint."""
    path = Path(checkpoint)
    if not path.exists():
        raise InputError(f"checkpoint {path}: not found")
    from ..training.checkpoint import load_for_inference  # here: orbax is only needed to load

    try:
        params, config, info = load_for_inference(str(path), preset=preset)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - the loader's reason, one line, with the path
        message = str(err) or type(err).__name__
        if str(path) not in message:
            message = f"checkpoint {path}: {message}"
        raise InputError(message) from err
    return params, config, dict(info or {})


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def memory_limit(max_memory_gb: float | None) -> tuple[int | None, str]:
    if max_memory_gb is not None:
        return int(max_memory_gb * memory.GIB), f"--max-memory-gb {max_memory_gb:g}"
    return memory.available_memory_bytes()


def check_memory(records, config: ModelConfig, num_samples: int, num_steps: int,
                 max_memory_gb: float | None, force: bool) -> None:
    """Refuse (before any sampling) records whose estimated peak memory exceeds the limit."""
    if force:
        return
    limit, source = memory_limit(max_memory_gb)
    num_params = memory.parameter_count(config)
    for rec in records:
        memory.check_fits(rec.name, rec.length, config, num_samples, num_steps, limit, source,
                          num_params=num_params)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def record_seed(seed: int, index: int) -> tuple[int, int]:
    """The seed of record `index`: depends only on the run's seed and the record's position."""
    return (int(seed), int(index))


def draw_noise(seed: tuple[int, int], num_samples: int, length: int, num_steps: int,
               dtype=np.float32) -> SampleNoise:
    """Standard normals for N samples; sample k comes from its own numpy generator seeded with
    (*seed, k) = (run seed, record index, k), so it does not depend on how many samples are drawn with it.

    numpy rather than jax.random: a jax draw compiles once per shape (seconds on a CPU, as
    long as compiling the sampler itself), and every new sequence length is a new shape.
    """
    parts = []
    for k in range(num_samples):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*seed, k])))
        # Fixed draw order; trans_steps last so that the other draws do not depend on --steps.
        parts.append((rng.standard_normal(length), rng.standard_normal((length, 3)),
                      rng.standard_normal((length, 3)),
                      rng.standard_normal((num_steps - 1, length, 3))))
    omega, axis, init, steps = (np.stack(x).astype(dtype) for x in zip(*parts))
    return SampleNoise(omega, axis, init, np.ascontiguousarray(np.swapaxes(steps, 0, 1)))


def params_dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


def predict_codes(params, config: ModelConfig, codes, seed, num_samples: int,
                  num_steps: int = NUM_SAMPLE_STEPS) -> dict:
    """All N samples of one sequence in one compiled call. Returns numpy arrays:
    coords_N/CA/C [N, L, 3] and plddt [L] in [0, 1] (pLDDT comes from the trunk, so it is the
    same for every sample)."""
    codes = jnp.asarray(codes, jnp.int32)
    noise = draw_noise(seed, num_samples, int(codes.shape[0]), num_steps, params_dtype(params))
    result = sample_jit(params, codes, noise, config)
    return {k: np.asarray(result[k]) for k in ("coords_N", "coords_CA", "coords_C", "plddt")}


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

SCORE_KEYS = ("ca_rmsd", "tm_score", "lddt")
# Which direction is better, to pick the best sample per score.
_BEST = {"ca_rmsd": min, "tm_score": max, "lddt": max}


def score_prediction(pred_ca, native_ca) -> dict:
    """CA-RMSD after Kabsch superposition, TM-score normalised by the native length, CA lDDT."""
    return {
        "ca_rmsd": ca_rmsd(pred_ca, native_ca),
        "tm_score": tm_score(pred_ca, native_ca, L_target=len(native_ca)),
        "lddt": lddt_ca(pred_ca, native_ca)[0],
    }


def best_and_mean(scores: list[dict]) -> dict:
    """{'ca_rmsd_best', 'ca_rmsd_mean', ...} over samples; NaN scores are ignored."""
    out = {}
    for key in SCORE_KEYS:
        values = [s[key] for s in scores if not math.isnan(s[key])]
        out[f"{key}_best"] = _BEST[key](values) if values else float("nan")
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
    return out


def best_sample(scores: list[dict]) -> int:
    """Index of the sample with the highest TM-score (ties: the lower RMSD)."""
    return max(range(len(scores)), key=lambda k: (scores[k]["tm_score"], -scores[k]["ca_rmsd"]))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staged_output(out_dir):
    """Yield a fresh hidden directory next to `out_dir`; on success move its files into
    `out_dir` (a rename when out_dir does not exist yet), on failure delete it."""
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out}: exists and is not a directory")
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
    if info.get("preset") and info.get("kind") == "state_dict":
        details.append(f"preset {info['preset']}")
    return f"{path} ({', '.join(details)})" if details else str(path)


def structure_header(record: Record, checkpoint, seed: int, steps: int, k: int, n: int) -> list[str]:
    # Short lines: PDB REMARKs are 80 columns and a wrapped key=value is hard to read.
    return [f"nanoaf2-jax prediction of {record.name} ({record.length} residues)",
            f"sample={k} (0-based, of {n}) seed={seed} steps={steps}",
            f"checkpoint={checkpoint}"]


def write_samples(stage: Path, record: Record, result: dict, fmt: str, header_args: dict,
                  stem: str | None = None, indices=None) -> list[str]:
    """One structure file per sample: {record}_sample{k}.{fmt}. Returns the file names."""
    n = result["coords_CA"].shape[0]
    names = []
    for k in range(n) if indices is None else indices:
        name = f"{stem or record.name}_sample{k}.{fmt}"
        write_backbone(stage / name, record.codes, result["coords_N"][k], result["coords_CA"][k],
                       result["coords_C"][k], plddt=result["plddt"],
                       header_lines=structure_header(record, k=k, n=n, **header_args), fmt=fmt)
        names.append(name)
    return names


def write_plot(path, record_name: str, pred_ca, native_ca, plddt, scores: dict, k: int, n: int):
    from ..evaluation.plots import plot_prediction

    title = (f"{record_name}: sample {k} (best of {n} by TM-score)  TM {scores['tm_score']:.3f}  "
             f"CA-RMSD {scores['ca_rmsd']:.2f} Å  lDDT {scores['lddt']:.3f}")
    plot_prediction(path, pred_ca, native_ca, plddt, title=title)


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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def checked_number(kind, accept, requirement):
    """An argparse type: parse with `kind`, then require `accept(value)` (else say `requirement`)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} {requirement}")
        return value

    return parse


positive_int = checked_number(int, lambda v: v >= 1, "must be at least 1")
seed_int = checked_number(int, lambda v: 0 <= v <= MAX_SEED, f"is outside 0..{MAX_SEED}")
positive_float = checked_number(float, lambda v: v > 0 and math.isfinite(v), "must be a positive number")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by sample.py and the evaluation command."""
    add_matmul_precision_argument(parser)
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH",
        help="trained weights: an orbax run directory (its latest checkpoint is used), one "
             "checkpoint step directory, or a reference PyTorch state_dict (.pt/.pth) or its "
             ".npz conversion. Orbax checkpoints carry their model config; a bare state_dict "
             "takes it from --preset")
    parser.add_argument(
        "--preset", metavar="NAME",
        help="model preset (reference, default, tiny; see configs.py) giving the architecture "
             "of a bare state_dict checkpoint")
    parser.add_argument("--num-samples", type=positive_int, default=1, metavar="N",
                        help="structures to sample per sequence, all in one compiled call "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="random seed; the same seed, inputs and options give the same "
                             "structures (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=NUM_SAMPLE_STEPS,
                        help="reverse-diffusion steps (default: %(default)s, as the reference)")
    parser.add_argument("--format", choices=("pdb", "cif"), default="pdb",
                        help="structure file format (default: %(default)s)")
    parser.add_argument(
        "--max-memory-gb", type=positive_float, metavar="GB",
        help="refuse sequences whose estimated peak memory (see nanoaf2_jax/memory.py) exceeds "
             "this; default: the memory available now (accelerator memory, or MemAvailable)")
    parser.add_argument("--force", action="store_true",
                        help="sample even when the memory estimate exceeds the limit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sample.py",
        description=(
            "Predict backbone structures (N, CA, C) of protein sequences with a trained\n"
            "nanoaf2-jax model by reverse SE(3) diffusion. Per sequence, all samples are drawn\n"
            "in one compiled call (the trunk runs once).\n\n"
            "Writes to --out: {record}_sample{k}.pdb (or .cif) for k = 0..N-1, pLDDT x 100 in\n"
            "the B-factor column, and summary.json; prints a table of mean pLDDT per sample\n"
            "(with --native also CA-RMSD, TM-score and CA lDDT, and {record}.png of the best\n"
            "sample). Files appear only when the whole run succeeds."),
        epilog=(
            "Sequences: one-letter codes of the 20 amino acids or X (unknown), any case;\n"
            "whitespace is ignored. The same --seed gives the same structures; sample k of a\n"
            "record does not depend on --num-samples.\n\n"
            "Examples:\n"
            "  python sample.py --checkpoint outputs/default --sequence MQIFVKTL... --num-samples 5\n"
            "  python sample.py --checkpoint model.pt --preset reference --fasta seqs.fa --out preds\n"
            "  python sample.py --checkpoint outputs/default --native data/pdb/1UBQ.pdb:A "
            "--num-samples 8"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sequence", action="append", default=[], metavar="SEQ",
                        help="a sequence to predict; repeatable; named seq1, seq2, ... in order")
    parser.add_argument("--fasta", action="append", default=[], metavar="FILE",
                        help="a FASTA file with any number of records; each is named by the first "
                             "word of its header (characters other than letters, digits, '.', "
                             "'_' and '-' become '_'); repeatable")
    parser.add_argument(
        "--native", metavar="FILE[:CHAIN]",
        help="a PDB/mmCIF structure to score the samples against (one sequence only). Without "
             "--sequence/--fasta its chain's own sequence is predicted; with one, the lengths "
             "must match. Residue i of the prediction is compared with the i-th residue of the "
             "chain that has N, CA and C")
    add_model_arguments(parser)
    parser.add_argument("--out", default="preds", metavar="DIR",
                        help="output directory (created; existing files of the same name are "
                             "replaced) (default: %(default)s)")
    return parser


@contextlib.contextmanager
def cli_errors():
    """Expected failures become one 'error: ...' line and exit status 1 (set NANOAF2_DEBUG=1
    for the traceback)."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError, ImportError) as err:
        if os.environ.get("NANOAF2_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def resolve_inputs(args) -> tuple[list[Record], Protein | None]:
    records = records_from_inputs(args.sequence, args.fasta)
    native = None
    if args.native:
        native = parse_structure_spec(args.native)
        if not records:
            records = [record_from_protein(native)]
        elif len(records) > 1:
            raise InputError(f"--native scores one sequence, but {len(records)} were given")
        elif records[0].length != native.length:
            raise InputError(
                f"record {records[0].name!r} has {records[0].length} residues but the native "
                f"{args.native} (chain {native.chain}) has {native.length}")
        else:
            diff = int(np.sum(records[0].codes != native.sequence))
            if diff:
                log(f"warning: record {records[0].name!r} differs from the native's sequence at "
                    f"{diff} of {native.length} positions; scoring residue i against residue i")
    if not records:
        raise InputError("nothing to predict: give --sequence, --fasta or --native")
    return records, native


def run(args) -> dict:
    records, native = resolve_inputs(args)
    params, config, info = load_model(args.checkpoint, args.preset)
    check_memory(records, config, args.num_samples, args.steps, args.max_memory_gb, args.force)
    if args.preset and info.get("kind") == "checkpoint":
        log(f"note: --preset {args.preset} ignored: {args.checkpoint} carries its own model config")
    header_args = {"checkpoint": describe_checkpoint(args.checkpoint, info), "seed": args.seed,
                   "steps": args.steps}
    summary = {
        "checkpoint": str(args.checkpoint), "checkpoint_info": info, "config": config.to_dict(),
        "seed": args.seed, "steps": args.steps, "num_samples": args.num_samples,
        "format": args.format, "native": args.native, "records": [],
    }
    with staged_output(args.out) as stage:
        for i, rec in enumerate(records):
            log(f"[{i + 1}/{len(records)}] {rec.name}: {rec.length} residues, "
                f"{args.num_samples} sample(s) x {args.steps} steps ...")
            start = time.perf_counter()
            result = predict_codes(params, config, rec.codes, record_seed(args.seed, i),
                                   args.num_samples, args.steps)
            seconds = time.perf_counter() - start
            files = write_samples(stage, rec, result, args.format, header_args)
            mean_plddt = 100.0 * float(np.mean(result["plddt"]))
            samples = [{"sample": k, "file": f, "mean_plddt": mean_plddt}
                       for k, f in enumerate(files)]
            entry = {"name": rec.name, "length": rec.length, "sequence": rec.sequence,
                     "mean_plddt": mean_plddt, "plddt": 100.0 * result["plddt"],
                     "seconds": seconds, "samples": samples}
            if native is not None:
                scores = [score_prediction(ca, native.coords_CA) for ca in result["coords_CA"]]
                for s, sc in zip(samples, scores):
                    s.update(sc)
                entry.update(best_and_mean(scores))
                k = best_sample(scores)
                entry["best_sample"] = k
                entry["plot"] = f"{rec.name}.png"
                write_plot(stage / entry["plot"], rec.name, result["coords_CA"][k],
                           native.coords_CA, result["plddt"], scores[k], k, args.num_samples)
            summary["records"].append(entry)
            log(f"[{i + 1}/{len(records)}] {rec.name}: done in {seconds:.1f} s "
                f"(mean pLDDT {mean_plddt:.1f})")
        write_json(stage / "summary.json", summary)
    print(summary_table(summary))
    n_files = sum(len(r["samples"]) for r in summary["records"])
    log(f"wrote {n_files} structure file(s) and summary.json to {args.out}")
    return summary


def summary_table(summary: dict) -> str:
    scored = summary.get("native") is not None
    header = ["record", "sample", "length", "mean pLDDT"]
    if scored:
        header += ["CA-RMSD (Å)", "TM-score", "lDDT"]
    header.append("file")
    rows = []
    for rec in summary["records"]:
        for s in rec["samples"]:
            row = [rec["name"], str(s["sample"]), str(rec["length"]), format_value(s["mean_plddt"], 1)]
            if scored:
                row += [format_value(s["ca_rmsd"]), format_value(s["tm_score"], 3),
                        format_value(s["lddt"], 3)]
            rows.append(row + [s["file"]])
    return text_table(header, rows)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_matmul_precision(args.matmul_precision)
    with cli_errors():
        run(args)
    return 0
