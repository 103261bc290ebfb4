"""Bad input gets a clear error, and the MODEL the node received is left exactly as it was."""
import math

import pytest
import torch

FORGET = "Van Gogh"


def frozen_state(model):
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def assert_untouched(model, before):
    assert model.patches == {}
    after = model.model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, equal_nan=True)


@pytest.fixture(scope="module")
def sd1(tiny, tmp_path_factory):
    embeddings = tmp_path_factory.mktemp("embeddings")      # empty: every embedding:name is missing
    return tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x", embedding_directory=str(embeddings))


@pytest.mark.parametrize("arguments, message", [
    ({"forget_text": ""}, "No concept to forget"),
    ({"forget_text": "  \n# just a comment\n"}, "No concept to forget"),
    ({"forget_text": "embedding:missing_embedding"}, "tokenizes to nothing"),
    ({"retain_text": "van gogh"}, "both forgotten and retained"),
    ({"retain_text": "Van Gogh painting", "kind": "raw text", "token_selection": "concept tokens",
      "alpha_retain": 1e6}, "retain concepts cover the forget concepts"),
    ({"strength": 1.5}, "strength must be between 0 and 1"),
    ({"strength": -0.1}, "strength must be between 0 and 1"),
    ({"strength": math.nan}, "strength must be between 0 and 1"),
    ({"alpha_forget": 0.5}, "alpha_forget must be a finite number >= 1"),
    ({"alpha_retain": -3.0}, "alpha_retain must be a finite number >= 1"),
    ({"alpha_forget": math.inf}, "alpha_forget must be a finite number >= 1"),
    ({"alpha_forget": math.nan}, "alpha_forget must be a finite number >= 1"),
    ({"kind": "landscape"}, "Unknown concept kind"),
    ({"templates_text": "a painting without a placeholder"}, "exactly one"),
    ({"layers": "queries"}, "does not apply to SD1.x"),
    ({"token_selection": "every other token"}, "Unknown token selection"),
    ({"combination": "average"}, "Unknown combination"),
])
def test_bad_arguments(sd1, erase, arguments, message):
    model, clip = sd1
    before = frozen_state(model)
    arguments = {"forget_text": FORGET, **arguments}
    with pytest.raises(ValueError, match=message):
        erase(model, clip, **arguments)
    assert_untouched(model, before)


def tiny_auraflow():
    """A model family the eraser does not support (yet): AuraFlow, tiny, random weights."""
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.AuraFlow({
        "in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 64, "n_layers": 2, "n_double_layers": 1,
        "n_heads": 2, "global_conddim": 64, "cond_seq_dim": 64, "max_seq": 64})
    config.set_inference_dtype(torch.float32, None)
    return comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def test_unsupported_family_names_the_supported_ones(sd1, erase):
    aura = tiny_auraflow()
    with pytest.raises(ValueError) as error:
        erase(aura, sd1[1], FORGET)
    assert "'AuraFlow'" in str(error.value)
    assert "Supported families: SD1.x, SD2.x, SDXL, SDXL Refiner, SD3, Flux, Chroma, Wan 2.1 / 2.2, LTX-Video, " \
           "Mochi, PixArt, HunyuanVideo, Qwen-Image, Lumina 2, Cosmos 1.0, Cosmos Predict2, Stable Cascade, HiDream, " \
           "Hunyuan-DiT." in str(error.value)
    assert aura.patches == {}


def test_a_clip_of_another_family_is_refused(tiny, erase):
    flux = tiny.tiny_model("Flux")                       # reads 64-wide T5 rows; an SDXL CLIP has no T5
    sdxl_clip = tiny.tiny_clip("SDXL")
    with pytest.raises(ValueError, match="This CLIP gives no .t5xxl. tokens, which the model reads"):
        erase(flux, sdxl_clip, FORGET)
    assert flux.patches == {}


def test_something_that_is_not_a_diffusion_model(sd1, erase):
    model, clip = sd1
    with pytest.raises(ValueError, match="not a ComfyUI diffusion model"):
        erase(clip, clip, FORGET)


def test_nan_in_the_weights(tiny, erase, sd1):
    model = tiny.tiny_model("SD1.x")
    key = next(k for k in model.model.state_dict() if k.endswith("attn2.to_k.weight"))
    model.model.state_dict()[key][0, 0] = math.nan
    before = frozen_state(model)
    with pytest.raises(ValueError, match="NaN or inf"):
        erase(model, sd1[1], FORGET)
    assert_untouched(model, before)


def test_nan_in_the_embeddings(tiny, erase, sd1):
    model, _ = sd1
    clip = tiny.tiny_clip("SD1.x")
    weight = next(p for n, p in clip.cond_stage_model.named_parameters() if "final_layer_norm.weight" in n)
    with torch.no_grad():
        weight[0] = math.inf
    before = frozen_state(model)
    with pytest.raises(ValueError, match="NaN or inf"):
        erase(model, clip, FORGET)
    assert_untouched(model, before)


def test_weights_packed_in_a_format_the_pack_cannot_read_are_refused(tiny, erase, sd1):
    """Packed integer weights (bitsandbytes NF4/int8 and the like) are not the weights their values spell:
    the node refuses them and names the formats it reads, instead of editing garbage."""
    import comfy.utils
    model = tiny.tiny_model("SD1.x")
    key = next(k for k in model.model.state_dict() if k.endswith("attn2.to_k.weight"))
    layer = comfy.utils.get_attr(model.model, key.removesuffix(".weight"))
    layer.weight = torch.nn.Parameter(torch.zeros(layer.weight.shape, dtype=torch.uint8), requires_grad=False)
    before = frozen_state(model)
    with pytest.raises(ValueError, match="format this pack cannot read.*GGUF"):
        erase(model, sd1[1], FORGET)
    assert_untouched(model, before)
