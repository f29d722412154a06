"""The whole model: input embedding, Pairformer trunk, SE(3) denoiser and pLDDT head."""

import jax
import jax.numpy as jnp
import flax.linen as nn

from .model_config import ModelConfig
from .denoiser import Conditioning, DiffusionModule
from .pairformer import InputEmbedding, PairformerBlock, PLDDTHead
from .confidence import StructureConfidenceHead
from .distogram import DistogramHead
from ..geometry.rigid import Rigid


class AlphaFold2(nn.Module):
    config: ModelConfig

    def setup(self):
        c = self.config
        self.input_embedding = InputEmbedding(c.c_s, c.c_z)
        self.pairformer_blocks = [
            PairformerBlock(c.c_s, c.c_z, c.pairformer_heads) for _ in range(c.num_pairformer_blocks)
        ]
        self.diffusion_module = DiffusionModule(c.c_s, c.c_z, c.c_atom, c.num_denoise_blocks, c.denoise_heads,
                                                c.rotation_update, c.translation_update, c.rotation_base,
                                                c.rotation_head, c.self_conditioning, 1.0 / c.coord_scale)
        if c.plddt_head == "structure":
            self.confidence_head = StructureConfidenceHead(c.num_plddt_bins)
        else:
            self.plddt_head = PLDDTHead(c.c_s, c.num_plddt_bins)
        if c.distogram_weight > 0:  # parameters only where the loss uses them
            self.distogram_head = DistogramHead()

    def trunk(self, sequence, residue_index, mask=None):
        """Sequence [B, L] -> (single [B, L, c_s], pair [B, L, L, c_z])."""
        single, pair = self.input_embedding(sequence, residue_index)
        for block in self.pairformer_blocks:
            single, pair = block(single, pair, mask)
        return single, pair

    def condition(self, single, pair, mask=None) -> Conditioning:
        return self.diffusion_module.condition(single, pair, mask)

    def denoise(self, noisy: Rigid, t, cond: Conditioning, previous=None, present=None) -> Rigid:
        return self.diffusion_module.denoise(noisy, t, cond, previous, present)

    def plddt_logits(self, single, pair=None, ca=None, mask=None):
        """pLDDT logits [B, L, bins]. The structure head also reads pair and the CA atoms (Å) of
        the structure it judges; the reference's head reads single only."""
        if self.config.plddt_head == "structure":
            return self.confidence_head(single, pair, ca, mask)
        return self.plddt_head(single)

    def distogram_logits(self, pair):
        """CB-CB distance logits [B, L, L, 64] (ModelConfig.distogram_weight > 0 only)."""
        return self.distogram_head(pair)

    def __call__(self, sequence, residue_index, noisy: Rigid, t, mask=None):
        """One full pass (used for initialisation): trunk, denoiser, pLDDT logits."""
        single, pair = self.trunk(sequence, residue_index, mask)
        if self.config.distogram_weight > 0:
            self.distogram_logits(pair)  # creates its parameters
        pred = self.diffusion_module(noisy, t, single, pair, mask)
        return pred, self.plddt_logits(single, pair, pred.trans, mask)


def init_params(config: ModelConfig, key, length: int = 8, dtype=jnp.float32):
    """Random parameters with the reference's initialisation (Xavier-uniform linears, zero
    biases, zero AdaLN and output projections, N(0, 1) relative-position embedding)."""
    model = AlphaFold2(config)
    seq = jnp.zeros((1, length), jnp.int32)
    frames = Rigid(jnp.broadcast_to(jnp.eye(3, dtype=dtype), (1, length, 3, 3)), jnp.zeros((1, length, 3), dtype))
    variables = model.init(key, seq, jnp.arange(length)[None], frames, jnp.zeros((1,), dtype))
    return variables["params"]


def count_parameters(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
