"""Crops of a chain longer than the crop size: which residues one training example keeps.

Two kinds, as AlphaFold trains (Jumper et al. 2021, suppl. 1.2.8; the spatial crop is
AlphaFold-Multimer's, Evans et al. 2021, suppl. 7.2.1, applied to one chain):

- contiguous: `crop_size` consecutive residues starting at a uniformly drawn position;
- spatial: the `crop_size` residues whose CA atoms are nearest to the CA of a uniformly drawn
  residue (ties broken by position), kept in chain order. Unlike a contiguous window it holds
  residues far apart in sequence that pack together, so long-range contacts are trained on.

Each returns sorted residue positions; the caller keeps the residues' own numbers, so the gaps a
spatial crop leaves stay visible to the relative-position features where the file's numbering
is used. Both are functions of the numpy Generator passed in: the same seed, the same crop.
"""

from __future__ import annotations

import numpy as np

from .structures import Protein

CROP_KINDS = ("contiguous", "spatial")


def contiguous_crop(length: int, crop_size: int, rng: np.random.Generator) -> np.ndarray:
    if length <= crop_size:
        return np.arange(length)
    start = int(rng.integers(0, length - crop_size + 1))
    return np.arange(start, start + crop_size)


def spatial_crop(ca: np.ndarray, crop_size: int, rng: np.random.Generator) -> np.ndarray:
    length = ca.shape[0]
    if length <= crop_size:
        return np.arange(length)
    centre = int(rng.integers(0, length))
    distance = np.linalg.norm(ca - ca[centre], axis=-1)
    # lexsort's last key is the primary one: by distance, then by position for equal distances.
    nearest = np.lexsort((np.arange(length), distance))[:crop_size]
    return np.sort(nearest)


def choose_crop(protein: Protein, crop_size: int | None, spatial_fraction: float,
                rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """(positions kept, kind): spatial with probability spatial_fraction, else contiguous.

    A chain that fits is kept whole (and draws nothing, so whether one protein fits does not
    shift the random stream of the others' crops: each example has its own generator anyway).
    """
    if crop_size is None or protein.length <= crop_size:
        return np.arange(protein.length), "none"
    if rng.random() < spatial_fraction:
        return spatial_crop(protein.coords_CA, crop_size, rng), "spatial"
    return contiguous_crop(protein.length, crop_size, rng), "contiguous"


def take(protein: Protein, positions: np.ndarray) -> Protein:
    """The residues at `positions` as a Protein of their own (numbers kept)."""
    return Protein(protein.sequence[positions], protein.coords_N[positions],
                   protein.coords_CA[positions], protein.coords_C[positions],
                   protein.residue_index[positions], protein.name, protein.chain,
                   protein.resolution, protein.method)
