#!/usr/bin/env bash
# One GPU session's checks, in one command, from a fresh copy of the repository:
#
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR: the reference's eight PDB entries (1BDD 1CRN 1ENH 1L2Y 1PRB 1UBQ 1VII 2GB1; the
#   machine may have no internet, so nothing is downloaded: copy them there first).
# OUT_DIR:  where the report goes (default: $OUT if set, else benchmarks/results/gpu-check-TIME).
#
# Environment: PYTHON=/path/to/python with jax[cuda12] already installed skips the install;
#   otherwise a venv at ${VENV:-.venv-gpu} gets `pip install -e '.[cuda12]'`.
#   BUDGET_S (default 570): seconds for everything after the install, so that the whole check
#   fits a 10-minute device slot; a phase that would not fit is skipped and says so.
#   GPU_CHECK_ALLOW_CPU=1 runs it without a GPU (to test the script itself; with a small
#   BUDGET_S the phases time out and the report says so).
#
# What it does, in order of what matters most if time runs short:
#   1. the device (nvidia-smi, jax.devices()); stops if JAX does not see a GPU;
#   2. trains the `default` preset on DATA_DIR (train.py, its 600 epochs; --eval-every 0, the
#      evaluation comes next), wall clock and steps/s;
#   3. evaluates it (python -m nanoaf2_jax.evaluate, 5 samples per protein) and checks the
#      targets of issue 11 on every protein;
#   4. the compilation cache: a second train.py start (--max-steps 2), warm, against the first;
#   5. benchmarks/bench.py: train step at L = 64, 128, 256 in float32 and bf16 and 100-step
#      sampling (1 and 8 samples), then the train step with --matmul-precision tensorfloat32.
# The report: OUT_DIR/gpu_check.md (markdown tables), logs in OUT_DIR/logs/. Exit status 0 when
# the model trained, was evaluated and met every target; 1 otherwise; 2 when it could not start.

set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-}"
OUT_DIR="${2:-${OUT:-$REPO/benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}}"
BUDGET_S="${BUDGET_S:-570}"

die() { echo "gpu_check: error: $*" >&2; exit 2; }

if [ -z "$DATA_DIR" ]; then
    die "no data directory given. Usage: bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR], DATA_DIR holding the eight PDB files (1BDD 1CRN 1ENH 1L2Y 1PRB 1UBQ 1VII 2GB1)"
fi
if [ ! -d "$DATA_DIR" ]; then
    die "data directory $DATA_DIR does not exist (copy the eight PDB files there; this script downloads nothing)"
fi
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
NUM_FILES=$(find "$DATA_DIR" -maxdepth 1 -type f \( -name '*.pdb' -o -name '*.ent' -o -name '*.cif' -o -name '*.mmcif' -o -name '*.pdb.gz' -o -name '*.cif.gz' -o -name '*.ent.gz' \) | wc -l)
if [ "$NUM_FILES" -eq 0 ]; then
    die "data directory $DATA_DIR holds no structure files (.pdb .ent .cif .mmcif, optionally .gz)"
fi

mkdir -p "$OUT_DIR/logs" || die "cannot create $OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOGS="$OUT_DIR/logs"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
REPORT="$OUT_DIR/gpu_check.md"
PHASES="$WORK/phases.md"
: > "$PHASES"
cd "$REPO" || die "cannot enter $REPO"

# --- Python with jax[cuda12] -----------------------------------------------------------------
INSTALL_S=0
if [ -z "${PYTHON:-}" ]; then
    VENV="${VENV:-$REPO/.venv-gpu}"
    echo "gpu_check: installing into $VENV: pip install -e '.[cuda12]' (log: $LOGS/install.log)"
    start=$(date +%s)
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --upgrade pip \
           && "$VENV/bin/pip" install -e "$REPO[cuda12]"; } > "$LOGS/install.log" 2>&1; then
        tail -n 20 "$LOGS/install.log" >&2
        die "pip install -e '.[cuda12]' into $VENV failed (last lines above, all in $LOGS/install.log). Without internet access pip can only use a local wheel index or cache; give an interpreter that already has jax[cuda12] with PYTHON=/path/to/python"
    fi
    INSTALL_S=$(( $(date +%s) - start ))
    PYTHON="$VENV/bin/python"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# The commands' compilation cache (nanoaf2_jax/cli/compilation_cache.py): cold at the start,
# private to this check, not in the report's folder.
export NANOAF2_JAX_COMPILATION_CACHE="$WORK/jax-cache"
unset JAX_PLATFORMS

START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

# phase NAME MAX_S COMMAND...: runs with a timeout of min(MAX_S, what the budget has left),
# logs to LOGS/NAME.log, adds a row to the phase table; returns the command's status.
phase() {
    local name="$1" max_s="$2"
    shift 2
    local limit
    limit=$(left)
    if [ "$limit" -gt "$max_s" ]; then limit="$max_s"; fi
    if [ "$limit" -lt 20 ]; then
        echo "| $name | - | skipped: $(left) s of the budget left |" >> "$PHASES"
        echo "gpu_check: $name skipped (budget)"
        return 124
    fi
    echo "gpu_check: $name (up to $limit s; log: $LOGS/$name.log)"
    local t0 rc
    t0=$(date +%s)
    # INT first: train.py ends a run it can end cleanly; 5 s later, KILL (mid-compilation).
    timeout --signal=INT --kill-after=5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    local secs=$(( $(date +%s) - t0 ))
    local status="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="timed out at $limit s"
    elif [ "$rc" -ne 0 ]; then
        status="failed (exit $rc; see logs/$name.log)"
    fi
    echo "| $name | $secs | $status |" >> "$PHASES"
    echo "gpu_check: $name: $status, $secs s"
    return "$rc"
}

# --- 1. The device ---------------------------------------------------------------------------
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOGS/device.log" 2>&1
else
    echo "nvidia-smi: not found" > "$LOGS/device.log"
fi
if ! "$PYTHON" - >> "$LOGS/device.log" 2>&1 <<'EOF'
import sys
import jax, jaxlib
print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend {jax.default_backend()}")
print("devices:", jax.devices())
sys.exit(0 if jax.default_backend() == "gpu" else 3)
EOF
then
  if [ -n "${GPU_CHECK_ALLOW_CPU:-}" ]; then
    echo "gpu_check: no GPU, going on because GPU_CHECK_ALLOW_CPU is set (a test of this script)"
  else
    cat "$LOGS/device.log" >&2
    die "JAX sees no GPU (above): check the driver (nvidia-smi) and that jax[cuda12] is installed in $PYTHON"
  fi
fi
cat "$LOGS/device.log"

# --- 2. Train the default preset -------------------------------------------------------------
RUN="$WORK/run-default"
TRAIN_WALL="-"
TRAINED=0
# Keep 100 s for the evaluation after it.
if phase train-default $(( $(left) - 100 )) "$PYTHON" train.py --data-dir "$DATA_DIR" \
        --output-dir "$RUN" --no-progress --eval-every 0; then
    TRAINED=1
    TRAIN_WALL=$(awk -F'|' '/train-default/ {gsub(/ /, "", $3); print $3}' "$PHASES")
fi

# --- 3. Evaluate and check the targets -------------------------------------------------------
if [ "$TRAINED" -eq 1 ]; then
    phase evaluate 150 "$PYTHON" -m nanoaf2_jax.evaluate --checkpoint "$RUN" \
        --data-dir "$DATA_DIR" --num-samples 5 --out "$OUT_DIR/evaluation"
else
    echo "| evaluate | - | skipped: training did not finish |" >> "$PHASES"
fi

# --- 4. Warm start through the compilation cache ---------------------------------------------
phase warm-start 60 "$PYTHON" train.py --data-dir "$DATA_DIR" --output-dir "$WORK/run-warm" \
    --no-progress --eval-every 0 --max-steps 2

# --- 5. Benchmarks (their compile times stay cold: bench.py does not use the cache) ----------
phase bench-float32-bf16 240 env -u NANOAF2_JAX_COMPILATION_CACHE "$PYTHON" benchmarks/bench.py \
    --lengths 64 128 256 --repeats 3 --precisions float32 bf16 --skip-trunk --samples 1 8 \
    --out "$OUT_DIR/bench-float32-bf16"
phase bench-tf32 120 env -u NANOAF2_JAX_COMPILATION_CACHE "$PYTHON" benchmarks/bench.py \
    --lengths 64 128 256 --repeats 3 --skip-trunk --skip-sampling \
    --matmul-precision tensorfloat32 --out "$OUT_DIR/bench-tf32"

TOTAL_S=$(( $(date +%s) - START ))

# --- The report ------------------------------------------------------------------------------
"$PYTHON" - "$REPORT" "$LOGS" "$OUT_DIR" "$PHASES" "$TOTAL_S" "$INSTALL_S" "$TRAIN_WALL" "$DATA_DIR" <<'EOF'
import json, math, re, subprocess, sys
from pathlib import Path

report, logs, out, phases, total_s, install_s, train_wall, data_dir = sys.argv[1:]
logs, out = Path(logs), Path(out)


def read(path):
    return path.read_text(errors="replace") if path.exists() else ""


def grab(text, pattern):
    m = re.search(pattern, text)
    return m.group(1) if m else "-"


commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
lines = ["# GPU check", "", f"Commit `{commit}`{' (with uncommitted changes)' if dirty else ''}; data `{data_dir}`.", "",
         "```", read(logs / "device.log").strip(), "```", "",
         f"Wall clock of the checks: **{total_s} s** ({'within' if int(total_s) <= 600 else 'over'} "
         f"10 minutes); the install before them: {install_s} s.", "",
         "| phase | seconds | status |", "| --- | ---: | --- |", read(Path(phases)).strip(), ""]

train = read(logs / "train-default.log")
warm = read(logs / "warm-start.log")
COMPILED = r"compiled the train step for \d+ batch shape\(s\) in ([\d.]+) s"
cold_compile, warm_compile = grab(train, COMPILED), grab(warm, COMPILED)
rate = grab(train, r"([\d.]+) steps/s")
lines += ["## Training the `default` preset", "",
          "| wall clock (s) | train step compile, all shapes, cold (s) | steps/s | same compile, warm start (s) |",
          "| ---: | ---: | ---: | ---: |",
          f"| {train_wall} | {cold_compile} | {rate} | {warm_compile} |", ""]

# Issue 11's targets, on every protein (docs/accuracy.md).
TARGETS = [("backbone_rmsd_best", "N-CA-C RMSD best ≤ 0.5 Å", lambda v: v <= 0.5),
           ("backbone_rmsd_mean", "N-CA-C RMSD mean ≤ 0.6 Å", lambda v: v <= 0.6),
           ("c_n_within_0.1_mean", "C-N within 0.1 Å ≥ 98%", lambda v: v >= 0.98),
           ("rotation_error_deg_mean", "frame error ≤ 10°", lambda v: v <= 10),
           ("tm_score_best", "TM-score ≥ 0.95", lambda v: v >= 0.95),
           ("lddt_best", "lDDT-Cα ≥ 0.95", lambda v: v >= 0.95),
           ("plddt_error", "|pLDDT − 100·lDDT| ≤ 10", lambda v: abs(v) <= 10)]
evaluation = out / "evaluation" / "evaluation.json"
lines += ["## Evaluation (5 samples per protein, 100 steps)", ""]
if evaluation.exists():
    proteins = json.loads(evaluation.read_text())["proteins"]
    lines += ["| protein | L | CA-RMSD best (Å) | " + " | ".join(t for _, t, _ in TARGETS) + " |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in TARGETS) + " |"]
    met_all = True
    for p in proteins:
        cells = []
        for key, _, ok in TARGETS:
            v = p.get(key)
            good = v is not None and not math.isnan(v) and ok(v)
            met_all &= good
            cells.append(f"{v:.3g}{'' if good else ' ✗'}" if v is not None else "- ✗")
        lines.append(f"| {p['protein']} | {p['residues']} | {p['ca_rmsd_best']:.2f} | " + " | ".join(cells) + " |")
        lines += ["", f"Targets on every protein: **{'met' if met_all else 'not met (✗ above)'}**.", ""]
else:
    met_all = False
    lines += ["No evaluation (see the phase table).", ""]

for name, title in (("bench-float32-bf16", "Train step float32 and bf16, sampling (`bench.py`)"),
                    ("bench-tf32", "Train step, `--matmul-precision tensorfloat32` (`bench.py`)")):
    md = read(out / name / "bench-latest.md")
    lines += [f"## {title}", ""]
    if md:
        lines += [md.strip(), ""]
    else:  # timed out or failed: the lines it printed as it went
        printed = [l for l in read(logs / f"{name}.log").splitlines() if l.startswith(("L=", "float32 matmul"))]
        lines += ["No table (see the phase table); what it printed:", "", "```", *printed, "```", ""]
Path(report).write_text("\n".join(lines))
print("\n".join(lines))
sys.exit(0 if met_all else 1)
EOF
STATUS=$?
echo "gpu_check: report in $REPORT"
rm -rf "$WORK"
# 0: trained, evaluated and every target met; 1: not (the report says what); 2: could not start.
exit "$STATUS"
