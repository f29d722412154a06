"""Prediction summary figure: predicted vs native CA distance maps and pLDDT along the chain.

matplotlib (a dependency of the package) is imported only when a plot is requested, so the
commands that draw nothing start without it.
"""

from __future__ import annotations

import io
import os

import numpy as np

from nanoaf2_jax.evaluation.metrics import distance_map
from nanoaf2_jax.inference.structure_io import atomic_write_bytes


def _import_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or pip install 'nanoaf2-jax[plot]')") from exc
    # Figure + the Agg canvas directly, not pyplot: no GUI backend, no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    return Figure, FigureCanvasAgg


def plot_prediction(path_png, pred_ca, native_ca, plddt, title="") -> None:
    """Three panels: predicted and native CA distance maps on one colour scale, and pLDDT.

    plddt is per residue, in [0, 1] or already in 0-100 (values above 1 are taken as 0-100).
    native_ca may be None, in which case the native panel is left empty.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    pred_map = distance_map(pred_ca)
    native_map = None if native_ca is None else distance_map(native_ca)
    plddt = np.asarray(plddt, dtype=np.float64).reshape(-1)
    if plddt.size and np.nanmax(plddt) <= 1.0:
        plddt = 100.0 * plddt
    length = pred_map.shape[0]

    vmax = max(pred_map.max(initial=0.0),
               0.0 if native_map is None else native_map.max(initial=0.0)) or 1.0
    fig = Figure(figsize=(15, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_pred, ax_native, ax_plddt = fig.subplots(1, 3, width_ratios=[1, 1, 1.25])

    image = None
    for ax, dmap, name in ((ax_pred, pred_map, "Predicted"), (ax_native, native_map, "Native")):
        ax.set_title(f"{name} CA distance map")
        ax.set_xlabel("residue")
        ax.set_ylabel("residue")
        if dmap is None:
            ax.text(0.5, 0.5, "no native structure", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        extent = (0.5, length + 0.5, length + 0.5, 0.5)  # residues numbered 1..L
        image = ax.imshow(dmap, cmap="viridis_r", vmin=0.0, vmax=vmax, extent=extent,
                          interpolation="nearest")
    fig.colorbar(image, ax=[ax_pred, ax_native], label="CA-CA distance (Å)", shrink=0.9)

    residues = np.arange(1, plddt.size + 1)
    # AlphaFold's confidence bands, as a faint background.
    for lo, hi, colour in ((0, 50, "#ff7d45"), (50, 70, "#ffdb13"), (70, 90, "#65cbf3"),
                           (90, 100, "#0053d6")):
        ax_plddt.axhspan(lo, hi, color=colour, alpha=0.12, lw=0)
    ax_plddt.plot(residues, plddt, color="black", lw=1.2)
    ax_plddt.set_xlim(0.5, max(plddt.size, 1) + 0.5)
    ax_plddt.set_ylim(0, 101)  # headroom so a line at 100 is not hidden by the frame
    ax_plddt.set_xlabel("residue")
    ax_plddt.set_ylabel("pLDDT")
    mean = np.nanmean(plddt) if plddt.size else float("nan")
    ax_plddt.set_title(f"pLDDT (mean {mean:.1f})")
    ax_plddt.grid(alpha=0.3)

    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(os.fspath(path_png), buffer.getvalue())


def plot_training_curves(path_png, loss, rmsd: dict) -> None:
    """Two panels against the step: the training loss (log scale) and the mean CA-RMSD of the
    evaluation during training, one line per protein set ({'train': [(step, Å)], ...})."""
    Figure, FigureCanvasAgg = _import_matplotlib()
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_rmsd = fig.subplots(1, 2)
    if loss:
        steps, values = zip(*loss)
        ax_loss.plot(steps, values, color="black", lw=0.8)
        if min(values) > 0:
            ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (mean per log window)")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    for name, points in rmsd.items():
        if points:
            steps, values = zip(*points)
            ax_rmsd.plot(steps, values, marker="o", label=name.replace("_", "-"))
    ax_rmsd.set_xlabel("step")
    ax_rmsd.set_ylabel("mean CA-RMSD (Å)")
    ax_rmsd.set_title("sampled structures vs native")
    ax_rmsd.set_ylim(bottom=0)
    ax_rmsd.grid(alpha=0.3)
    if any(rmsd.values()):
        ax_rmsd.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path_png, buffer.getvalue())
