"""Prediction summary figure: predicted vs native CA distance maps, the predicted CA trace
superposed on the native's in 3D (coloured by pLDDT), pLDDT along the chain, and predicted and
native secondary structure (three states, evaluation/secondary_structure.py) under it.

matplotlib (a dependency of the package) is imported only when a plot is requested, so the
commands that draw nothing start without it.
"""

from __future__ import annotations

import io
import os

import numpy as np

from nanoaf2_jax.evaluation.metrics import apply_transform, distance_map, kabsch
from nanoaf2_jax.evaluation.dssp import secondary_structure
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


# AlphaFold's pLDDT bands: (low, high, colour).
_PLDDT_BANDS = ((0, 50, "#ff7d45"), (50, 70, "#ffdb13"), (70, 90, "#65cbf3"), (90, 100, "#0053d6"))
_SS_COLOURS = {"H": "#d62728", "E": "#e8b100", "C": "#d9d9d9"}


def _plddt_colour(value):
    return next((c for lo, hi, c in _PLDDT_BANDS if value < hi), _PLDDT_BANDS[-1][2])


def _draw_superposition(ax, pred_ca, native_ca, plddt):
    """Native CA trace in grey, the prediction superposed on it (Kabsch on CA) coloured by pLDDT;
    both turned to the native's principal axes so the view shows its widest extent."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    pred = np.asarray(pred_ca, np.float64)
    if native_ca is not None:
        native = np.asarray(native_ca, np.float64)
        pred = apply_transform(pred, *kabsch(pred, native))
        ref = native
    else:
        ref = pred
    centre = ref.mean(axis=0)
    _, _, axes = np.linalg.svd(ref - centre)
    pred = (pred - centre) @ axes.T
    if native_ca is not None:
        native = (native - centre) @ axes.T
        ax.plot(*native.T, color="0.55", lw=2.5, alpha=0.6, label="native")
    segments = np.stack([pred[:-1], pred[1:]], axis=1)
    colours = [_plddt_colour(0.5 * (a + b)) for a, b in zip(plddt[:-1], plddt[1:])]
    ax.add_collection3d(Line3DCollection(segments, colors=colours, lw=2.0))
    points = pred if native_ca is None else np.concatenate([pred, native])
    lo, hi = points.min(axis=0), points.max(axis=0)
    half = 0.5 * float(np.max(hi - lo)) or 1.0
    mid = 0.5 * (lo + hi)
    for setter, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), mid):
        setter(m - half, m + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=20, azim=-60)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_zticklabels([])
    ax.set_title("CA trace: prediction (pLDDT colours)\non native (grey), superposed")


def _draw_secondary_structure(ax, tracks):
    """One row per (label, 'HEC' string): helix red, strand yellow, coil grey."""
    for row, (label, states) in enumerate(tracks):
        for k, state in enumerate(states):
            ax.add_patch(_rectangle((k + 0.5, row + 0.1), 1.0, 0.8 if state != "C" else 0.3,
                                    _SS_COLOURS[state], row, state))
    ax.set_yticks([r + 0.5 for r in range(len(tracks))], [label for label, _ in tracks])
    ax.set_ylim(len(tracks), 0)
    ax.set_xlabel("residue")
    for state, name in (("H", "helix"), ("E", "strand"), ("C", "coil")):
        ax.bar(0, 0, color=_SS_COLOURS[state], label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title("secondary structure (3-state, DSSP H-bond rules; O rebuilt with ideal geometry)",
                 fontsize=9)


def _rectangle(xy, width, height, colour, row, state):
    from matplotlib.patches import Rectangle

    x, y = xy
    if state == "C":  # a thin line for coil, centred in the row
        y = row + 0.35
    return Rectangle((x, y), width, height, color=colour, lw=0)


def plot_prediction(path_png, pred_ca, native_ca, plddt, title="", pred_backbone=None,
                    native_backbone=None, sequence=None) -> None:
    """Distance maps (predicted, native, one colour scale), the 3D superposition, pLDDT, and
    secondary structure of the prediction and the native.

    plddt is per residue, in [0, 1] or already in 0-100 (values above 1 are taken as 0-100).
    native_ca may be None, in which case the native panels are left empty. pred_backbone and
    native_backbone are (N, CA, C) [L, 3] each; without them no secondary structure is drawn
    for that structure. sequence (residue codes) leaves prolines without an N-H.
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
    fig = Figure(figsize=(15, 9.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 3, height_ratios=[4.6, 2.2, 1.0])
    ax_pred, ax_native = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_3d = fig.add_subplot(grid[0, 2], projection="3d")
    ax_plddt = fig.add_subplot(grid[1, :])
    ax_ss = fig.add_subplot(grid[2, :], sharex=ax_plddt)

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
    for lo, hi, colour in _PLDDT_BANDS:
        ax_plddt.axhspan(lo, hi, color=colour, alpha=0.12, lw=0)
    ax_plddt.plot(residues, plddt, color="black", lw=1.2)
    ax_plddt.set_xlim(0.5, max(plddt.size, 1) + 0.5)
    ax_plddt.set_ylim(0, 101)  # headroom so a line at 100 is not hidden by the frame
    ax_plddt.set_ylabel("pLDDT")
    mean = np.nanmean(plddt) if plddt.size else float("nan")
    ax_plddt.set_title(f"pLDDT (mean {mean:.1f})")
    ax_plddt.grid(alpha=0.3)

    _draw_superposition(ax_3d, pred_ca, native_ca, plddt)
    tracks = [(label, secondary_structure(*backbone, sequence=sequence))
              for label, backbone in (("predicted", pred_backbone), ("native", native_backbone))
              if backbone is not None]
    if tracks:
        _draw_secondary_structure(ax_ss, tracks)
    else:
        ax_ss.text(0.5, 0.5, "no backbone given", ha="center", va="center", transform=ax_ss.transAxes)
        ax_ss.set_yticks([])

    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(os.fspath(path_png), buffer.getvalue())


def plot_training_curves(path_png, loss, rmsd: dict, fold_scores: dict | None = None) -> None:
    """Panels against the step: the training loss (log scale), the mean CA-RMSD of the evaluation
    during training, one line per protein set ({'train': [(step, Å)], ...}), and, when
    fold_scores is given ({'held-out lDDT-Cα': [(step, value)], ...}), those scores (0-1): the
    learning curve on chains the run never trained on."""
    Figure, FigureCanvasAgg = _import_matplotlib()
    panels = 3 if fold_scores else 2
    fig = Figure(figsize=(5.5 * panels, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    ax_loss, ax_rmsd = axes[0], axes[1]
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
    if fold_scores:
        ax = axes[2]
        for name, points in fold_scores.items():
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("mean score")
        ax.set_ylim(0, 1)
        ax.set_title("held-out chains: is a fold being learned?")
        ax.grid(alpha=0.3)
        ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path_png, buffer.getvalue())


def plot_calibration(path_png, entries: list[dict], title: str = "") -> None:
    """pLDDT against what the samples achieve: left, every residue's pLDDT against its lDDT-Cα
    (a 2D histogram, the mean lDDT-Cα per 10-point pLDDT bin, and the diagonal a calibrated
    head follows); right, each protein's mean pLDDT against 100 x its mean lDDT-Cα. entries are
    evaluate's per-protein records (their samples' plddt_per_residue and lddt_per_residue)."""
    Figure, FigureCanvasAgg = _import_matplotlib()
    fig = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_res, ax_prot = fig.subplots(1, 2)
    pairs = np.asarray([(p, q) for e in entries for s in e["samples"]
                        for p, q in zip(s["plddt_per_residue"], s["lddt_per_residue"])], np.float64)
    pairs = pairs[np.all(np.isfinite(pairs), axis=1)] if pairs.size else np.zeros((0, 2))
    edges = np.linspace(0, 100, 11)
    if len(pairs):
        ax_res.hist2d(pairs[:, 0], pairs[:, 1], bins=[np.linspace(0, 100, 41)] * 2, cmin=1, cmap="Greys")
        which = np.clip(np.digitize(pairs[:, 0], edges) - 1, 0, len(edges) - 2)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(len(edges) - 1) if np.any(which == b)]
        means = [pairs[which == b, 1].mean() for b in range(len(edges) - 1) if np.any(which == b)]
        ax_res.plot(centres, means, "o-", color="#d62728", label="mean lDDT-Cα per pLDDT bin")
    ax_res.plot([0, 100], [0, 100], "--", color="grey", lw=1, label="calibrated")
    ax_res.set(xlim=(0, 100), ylim=(0, 100), xlabel="pLDDT (per residue)",
               ylabel="lDDT-Cα × 100 (per residue)", title=f"{len(pairs)} residues")
    ax_res.legend(loc="upper left")
    x = [e["mean_plddt"] for e in entries]
    y = [e["mean_residue_lddt"] for e in entries]
    ax_prot.scatter(x, y, s=14, color="#1f77b4")
    ax_prot.plot([0, 100], [0, 100], "--", color="grey", lw=1)
    ax_prot.fill_between([0, 100], [-10, 90], [10, 110], color="grey", alpha=0.12, label="within 10 points")
    ax_prot.set(xlim=(0, 100), ylim=(0, 100), xlabel="mean pLDDT (per protein)",
                ylabel="mean lDDT-Cα × 100 (per protein)", title=f"{len(entries)} proteins")
    ax_prot.legend(loc="upper left")
    for ax in (ax_res, ax_prot):
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(os.fspath(path_png), buffer.getvalue())
