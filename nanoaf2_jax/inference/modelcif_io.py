"""Predicted backbones as ModelCIF: the mmCIF dialect AlphaFold, ColabFold and OpenFold write,
with pLDDT as a per-residue quality metric (`ma_qa_metric_local`) and its mean as a global one
(`ma_qa_metric_global`), which Mol*, ChimeraX and PyMOL colour by.

Written with the `modelcif` package (python-modelcif, kept by the ModelCIF dictionary's
authors) rather than by hand: it emits the categories the dictionary requires (entity, SEQRES
as `entity_poly_seq`, software, protocol, model groups) and reads them back for the tests.
pLDDT × 100 also goes into B-factors, as in the PDB files.
"""

from __future__ import annotations

import io

import ihm
import modelcif
import modelcif.dumper
import modelcif.model
import modelcif.protocol
import modelcif.qa_metric
import numpy as np

from .. import __version__
from ..geometry.residue_constants import AA_VOCAB

# The model's N, CA, C and the O that structure_io rebuilds from them (for secondary structure).
_BACKBONE = (("N", "N"), ("CA", "C"), ("C", "C"), ("O", "O"))


class _LocalPLDDT(modelcif.qa_metric.Local, modelcif.qa_metric.PLDDT):
    name = "pLDDT"
    software = None
    description = "Predicted lDDT-Ca of the residue (0-100), from the model's pLDDT head"


class _GlobalPLDDT(modelcif.qa_metric.Global, modelcif.qa_metric.PLDDT):
    name = "pLDDT"
    software = None
    description = "Mean predicted lDDT-Ca over the chain (0-100)"


class _Backbone(modelcif.model.AbInitioModel):
    """N, CA, C, O of one chain; B-factor = pLDDT × 100."""

    def __init__(self, asym, coords, bfactors, **kwargs):
        super().__init__(**kwargs)
        self._asym, self._coords, self._bfactors = asym, coords, bfactors

    def get_atoms(self):
        for i in range(self._bfactors.shape[0]):
            for (name, element), xyz in zip(_BACKBONE, self._coords):
                x, y, z = (float(v) for v in xyz[i])
                yield modelcif.model.Atom(asym_unit=self._asym, seq_id=i + 1, atom_id=name, type_symbol=element,
                                          x=x, y=y, z=z, biso=float(self._bfactors[i]), occupancy=1.0)


# ihm's peptide alphabet has no 'X'; an unknown residue is the standard UNK component.
_UNKNOWN = ihm.LPeptideChemComp("UNK", "X", "X", name="UNKNOWN")


def entity_sequence(codes) -> list:
    """Residue codes → one-letter codes, UNK for anything outside the 20 amino acids."""
    return [AA_VOCAB[int(c)] if 0 <= int(c) < 20 else _UNKNOWN for c in np.asarray(codes).reshape(-1)]


def modelcif_text(name, sequence_codes, coords, plddt, header_lines=()) -> str:
    """The ModelCIF document of one predicted chain. coords: (N, CA, C, O), each [L, 3] in Å;
    plddt in [0, 1] per residue or None; header_lines (checkpoint, seed, steps) go into the
    protocol's details and, as before, into leading '#' comment lines."""
    if len(coords) != len(_BACKBONE):
        raise ValueError(f"coords holds {len(coords)} atoms per residue, expected N, CA, C, O")
    length = len(np.asarray(sequence_codes).reshape(-1))
    values = np.zeros(length) if plddt is None else 100.0 * np.asarray(plddt, np.float64).reshape(-1)
    details = "; ".join(header_lines)
    system = modelcif.System(title=f"nanoaf2-jax prediction of {name}", id=str(name).upper() or "MODEL")
    entity = modelcif.Entity(entity_sequence(sequence_codes), description=f"{name} ({length} residues)")
    asym = modelcif.AsymUnit(entity, details="Predicted chain A", id="A")
    assembly = modelcif.Assembly((asym,), name="Predicted chain")
    software = modelcif.Software(
        name="nanoaf2-jax", classification="model building",
        description="JAX/Flax port of nano-alphafold2: Pairformer trunk, SE(3) frame diffusion",
        location=None, type="program", version=__version__)
    system.software.append(software)
    model = _Backbone(asym, coords, values, assembly=assembly, name=f"{name} backbone (N, CA, C, O)")
    if plddt is not None:
        for i in range(length):
            model.qa_metrics.append(_LocalPLDDT(asym.residue(i + 1), float(values[i])))
        model.qa_metrics.append(_GlobalPLDDT(float(np.mean(values))))
    group = modelcif.model.ModelGroup([model], name="Samples of reverse SE(3) diffusion")
    system.model_groups.append(group)
    protocol = modelcif.protocol.Protocol()
    protocol.steps.append(modelcif.protocol.ModelingStep(
        input_data=None, output_data=group, name="reverse diffusion", details=details or None,
        software=software))
    system.protocols.append(protocol)
    out = io.StringIO()
    modelcif.dumper.write(out, [system])
    comments = "".join(f"# {line}\n" for line in header_lines)
    return comments + out.getvalue()
