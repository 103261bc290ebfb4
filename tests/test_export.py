"""Exporting an erasure as a LoRA file that ComfyUI's stock LoRA loader applies to the same weights."""
import json

import pytest
import torch

from conftest import pack_module
from test_comfy_erase import loaded_weights

PAIRS = "a nude woman on a beach | a woman on a beach\na naked man in a park | a man in a park"


@pytest.fixture(scope="module")
def export(pack):
    return pack_module("comfy_glue.lora_export")


@pytest.mark.parametrize("family", ["SD1.x", "SDXL", "Flux"])
def test_stock_lora_loader_reproduces_the_erased_weights(family, built, erase, export, comfy, tmp_path):
    from comfy.sd import load_lora_for_models
    model, clip = built(family)
    patched, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet", strength=0.8, erase_pooled=True)
    state_dict, metadata = export.erasure_lora(patched, torch.float16)
    path = tmp_path / "erasure.safetensors"
    comfy.utils.save_torch_file(state_dict, str(path), metadata=metadata)
    lora = comfy.utils.load_torch_file(str(path))
    reloaded, _ = load_lora_for_models(model, None, lora, 1.0, 0.0)   # what LoraLoaderModelOnly does
    keys = sorted(patched.patches)
    assert sorted(reloaded.patches) == keys                  # every layer found by the stock key mapping
    erased = loaded_weights(comfy, patched, keys)
    from_file = loaded_weights(comfy, reloaded, keys)
    for key in keys:
        scale = float(erased[key].abs().max())
        assert float((erased[key] - from_file[key]).abs().max()) < 2e-3 * scale, key   # fp16 factors
    recipes = json.loads(metadata["erasure_recipes"])
    assert recipes[0]["method"] == "CURE spectral eraser" and recipes[0]["forget"] == "Van Gogh\nStarry Night"
    assert len(metadata["erasure_base_weights_sha256"]) == 64


def test_two_erasures_stack_in_one_file_and_refusal_exports_too(built, erase, export, comfy):
    from comfy.sd import load_lora_for_models
    refusal = pack_module("comfy_glue.refusal").erase_with_refusal
    model, clip = built("SD1.x")
    first, _ = erase(model, clip, "Van Gogh", "")
    both, _ = refusal(first, clip, PAIRS)
    state_dict, metadata = export.erasure_lora(both, torch.float32)
    assert {r["method"] for r in json.loads(metadata["erasure_recipes"])} == {"CURE spectral eraser",
                                                                            "low-rank refusal vector"}
    reloaded, _ = load_lora_for_models(model, None, state_dict, 1.0, 0.0)
    keys = sorted(both.patches)
    expected, got = loaded_weights(comfy, both, keys), loaded_weights(comfy, reloaded, keys)
    for key in keys:
        assert torch.allclose(expected[key], got[key], atol=1e-5), key


def test_the_denoiser_sources_bias_change_exports_as_diff_b(built, export, comfy):
    """A bias change is no low-rank product: it goes in the file as ``<layer>.diff_b``, which the stock loader adds
    to the bias."""
    from comfy.sd import load_lora_for_models
    refusal = pack_module("comfy_glue.refusal").erase_with_refusal
    model, clip = built("SD1.x")
    patched, _ = refusal(model, clip, PAIRS, source="denoiser activations", denoiser_steps=2, denoiser_size=8)
    state_dict, metadata = export.erasure_lora(patched, torch.float32)
    biases = sorted(key for key in patched.patches if key.endswith(".bias"))
    assert biases and sorted(k for k in state_dict if k.endswith(".diff_b")) == [
        key.removesuffix(".bias") + ".diff_b" for key in biases]
    assert metadata["erasure_layers"] == str(len(patched.patches) - len(biases))
    reloaded, _ = load_lora_for_models(model, None, state_dict, 1.0, 0.0)
    keys = sorted(patched.patches)
    assert sorted(reloaded.patches) == keys
    expected, got = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    for key in keys:
        assert torch.allclose(expected[key], got[key], atol=1e-5), key


def test_a_model_without_erasure_is_refused(built, export):
    with pytest.raises(ValueError, match="carries no erasure"):
        export.erasure_lora(built("SD1.x")[0])
