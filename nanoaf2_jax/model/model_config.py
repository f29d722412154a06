"""Model configuration: the reference's AlphaFold2(...) constructor arguments."""

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    c_s: int = 256
    c_z: int = 64
    c_atom: int = 256
    num_pairformer_blocks: int = 4
    pairformer_heads: int = 4
    num_denoise_blocks: int = 4
    denoise_heads: int = 8
    num_plddt_bins: int = 50
    fape_weight: float = 0.1
    trans_weight: float = 1.0
    rot_weight: float = 0.5
    plddt_weight: float = 0.01

    def __post_init__(self):
        for name, dim, heads in (
            ("c_z", self.c_z, self.pairformer_heads),
            ("c_s", self.c_s, self.pairformer_heads),
            ("c_atom", self.c_atom, self.denoise_heads),
        ):
            if dim % heads:
                raise ValueError(f"{name}={dim} is not divisible by its number of heads ({heads})")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
