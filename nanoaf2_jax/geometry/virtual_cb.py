"""The virtual CB atom of a backbone residue, placed from its N, CA and C.

Glycine has no CB and our structures carry no side chains, but the position an ideal CB would
take is fixed by the backbone (trRosetta, Yang et al. 2020; the same constants are used by
ProteinMPNN and RFdiffusion): CB = CA − 0.58273431·(b × c) + 0.56802827·b − 0.54067466·c with
b = CA − N and c = C − CA. CB-CB distances carry the side chains' orientation that CA-CA
distances lack, which is why AlphaFold 2's distogram bins them (CA for glycine; here every
residue gets the virtual one).
"""

import jax.numpy as jnp


def virtual_cb(n, ca, c):
    """N, CA, C [..., 3] -> CB [..., 3]."""
    b = ca - n
    c_vec = c - ca
    a = jnp.cross(b, c_vec)
    return -0.58273431 * a + 0.56802827 * b - 0.54067466 * c_vec + ca
