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


# The architecture of each training preset in the repository's configs.py, by the preset's name.
# A bare state_dict (.pt/.npz) carries no config, so loading one for inference takes its model
# from here (`--preset NAME`); the package itself never imports configs.py.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "reference": ModelConfig(),
    "default": ModelConfig(),
    # Small enough that a CPU step takes milliseconds: smoke runs and tests.
    "tiny": ModelConfig(c_s=32, c_z=16, c_atom=32, num_pairformer_blocks=1, num_denoise_blocks=1,
                        denoise_heads=4),
}


def model_preset(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}") from None
