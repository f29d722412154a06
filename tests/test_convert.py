"""Weight conversion between the reference's state_dict and Flax params, and the model size."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from nanoaf2_jax.model.model_config import ModelConfig
from nanoaf2_jax.model.convert import (
    ConversionError,
    load_state_dict,
    params_to_state_dict,
    path_to_torch_name,
    save_state_dict,
    state_dict_to_params,
    template_params,
    torch_name_to_path,
)
from nanoaf2_jax.model.alphafold2 import count_parameters, init_params

FIXTURE = Path(__file__).parent / "fixtures" / "small.npz"


def golden_state_dict():
    with np.load(FIXTURE) as z:
        config = ModelConfig.from_json(str(z["config"]))
        return {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}, config


def test_default_config_has_the_reference_parameter_count():
    assert count_parameters(template_params(ModelConfig())) == 8_821_880


def test_parameter_count_follows_config():
    small = ModelConfig(c_s=32, c_z=16, c_atom=32, num_pairformer_blocks=2, num_denoise_blocks=2, denoise_heads=4)
    sd, config = golden_state_dict()
    assert config == small
    assert count_parameters(template_params(small)) == sum(v.size for v in sd.values())


def test_names_map_both_ways():
    for name in ("pairformer_blocks.10.tri_out.ln.weight", "diffusion_module.time_mlp.2.bias", "plddt_head.net.0.weight"):
        assert path_to_torch_name(torch_name_to_path(name)[:-1] + ("kernel",)) == name.replace(".bias", ".weight")


def test_round_trip_is_exact_and_layouts_are_torch():
    sd, config = golden_state_dict()
    params = state_dict_to_params(sd, config)
    kernel = params["pairformer_blocks_0"]["tri_out"]["left_proj"]["kernel"]
    np.testing.assert_array_equal(kernel, sd["pairformer_blocks.0.tri_out.left_proj.weight"].T)
    back = params_to_state_dict(params)
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].shape == sd[k].shape and back[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(back[k], sd[k])


def test_random_init_round_trips_through_npz(tmp_path):
    config = ModelConfig(c_s=16, c_z=8, c_atom=16, num_pairformer_blocks=1, num_denoise_blocks=1, denoise_heads=4)
    params = init_params(config, jax.random.PRNGKey(0))
    path = save_state_dict(params_to_state_dict(params), tmp_path / "model.npz")
    again = state_dict_to_params(load_state_dict(path), config)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
    assert list(tmp_path.iterdir()) == [tmp_path / "model.npz"]


def test_missing_unexpected_and_misshaped_tensors_are_named():
    sd, config = golden_state_dict()
    missing = dict(sd)
    del missing["plddt_head.net.3.bias"]
    with pytest.raises(ConversionError, match=r"missing tensors: plddt_head\.net\.3\.bias"):
        state_dict_to_params(missing, config)
    extra = dict(sd, **{"diffusion_module.extra.weight": np.zeros(3)})
    with pytest.raises(ConversionError, match=r"unexpected tensors: diffusion_module\.extra\.weight"):
        state_dict_to_params(extra, config)
    wrong = dict(sd)
    wrong["input_embedding.relpos.weight"] = np.zeros((64, 16), np.float32)
    with pytest.raises(ConversionError, match=r"input_embedding\.relpos\.weight: shape \(64, 16\), expected \(65, 16\)"):
        state_dict_to_params(wrong, config)
    with pytest.raises(ConversionError, match="missing tensors"):
        state_dict_to_params(sd, ModelConfig())


def test_pt_files_load_strictly_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    sd, config = golden_state_dict()
    path = save_state_dict(params_to_state_dict(state_dict_to_params(sd, config)), tmp_path / "model.pt")
    loaded = torch.load(path, weights_only=True)["model_state_dict"]
    assert set(loaded) == set(sd)
    for k, v in loaded.items():
        np.testing.assert_array_equal(v.numpy(), sd[k])
    again = load_state_dict(path)
    np.testing.assert_array_equal(again["input_embedding.relpos.weight"], sd["input_embedding.relpos.weight"])


def test_torch_free_pt_writer_gives_what_torch_save_gives(tmp_path):
    """model/torch_zip.py writes the .pt without torch: torch.load reads it (weights only or
    not, memory-mapped too: storages 64-byte aligned) with the dtypes, shapes (0-d included) and
    values torch.save's own file gives."""
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    from nanoaf2_jax.model.torch_zip import write_torch_state_dict

    rng = np.random.default_rng(0)
    sd = {"w": rng.standard_normal((3, 5)).astype(np.float32), "t": rng.standard_normal((4, 3)).T,
          "scalar": np.array(2.5, np.float32), "i": np.arange(7), "mask": rng.random(9) > 0.5,
          "h": rng.standard_normal(4).astype(np.float16), "big": rng.standard_normal(70000).astype(np.float32)}
    with open(tmp_path / "ours.pt", "wb") as f:
        write_torch_state_dict(sd, f)
    torch.save({"model_state_dict": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}},
               tmp_path / "torch.pt")
    want = torch.load(tmp_path / "torch.pt", weights_only=True)["model_state_dict"]
    for kwargs in ({"weights_only": True}, {"weights_only": False}, {"weights_only": True, "mmap": True}):
        got = torch.load(tmp_path / "ours.pt", **kwargs)["model_state_dict"]
        assert list(got) == list(sd)
        for k in sd:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            assert torch.equal(got[k], want[k]), k
    with pytest.raises(ValueError, match="complex64"):
        write_torch_state_dict({"c": np.zeros(2, np.complex64)}, tmp_path / "bad.pt")
    # And torch is never imported for it (importing torch is what it saves).
    code = ("import sys, numpy as np; from nanoaf2_jax.model.torch_zip import write_torch_state_dict; "
            f"write_torch_state_dict({{'a': np.ones(3, np.float32)}}, open({str(tmp_path / 'p.pt')!r}, 'wb')); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_state_dict(tmp_path / "nothing.npz")
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"xx")
    with pytest.raises(ConversionError, match="weights.bin"):
        load_state_dict(bad)


def test_config_rejects_unknown_keys_and_bad_heads():
    with pytest.raises(ValueError, match="c_q"):
        ModelConfig.from_dict({"c_q": 3})
    with pytest.raises(ValueError, match="c_atom=30"):
        ModelConfig(c_atom=30, denoise_heads=8)
    assert ModelConfig.from_json(json.dumps(ModelConfig().to_dict())) == ModelConfig()


def test_template_params_traces_once_per_config_and_hands_out_fresh_trees():
    """Sampling asks for the template twice (memory estimate, checkpoint restore); the model's
    initialisation is traced once, and a caller altering its tree cannot alter the next one's."""
    from nanoaf2_jax.model import convert
    from nanoaf2_jax.model.model_config import MODEL_PRESETS

    config = MODEL_PRESETS["tiny"]
    convert._template_params.cache_clear()
    first = convert.template_params(config)
    first.pop(next(iter(first)))  # a careless caller
    second = convert.template_params(config)
    assert convert._template_params.cache_info().misses == 1
    assert jax.tree_util.tree_structure(second) == jax.tree_util.tree_structure(
        jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0))))
    assert len(second) == len(first) + 1
