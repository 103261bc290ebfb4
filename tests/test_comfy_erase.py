"""The eraser on ComfyUI 0.3.75's own SD1.x / SD2.x / SDXL classes (tiny, random weights, real tokenizers)."""

import pytest
import torch

from conftest import pack_module

FAMILIES = ["SD1.x", "SD2.x", "SDXL"]
FORGET, RETAIN = "Van Gogh\nStarry Night", "Claude Monet\nwatercolor"


@pytest.fixture(scope="module")
def encoding(pack):
    return pack_module("nodes.encoding")


def cross_attention_keys(model, which="to_[kv]"):
    import re
    pattern = re.compile(rf"^diffusion_model\..*\.attn2\.{which}\.weight$")
    return [k for k in model.model.state_dict() if pattern.match(k) and model.model.state_dict()[k].numel()]


def loaded_weights(comfy, model, keys):
    """The weights the sampler would use: load the patcher the way sampling does, read them, unload."""
    comfy.mm.load_models_gpu([model], force_full_load=True)
    weights = {k: comfy.utils.get_attr(model.model, k).detach().float().clone() for k in keys}
    comfy.mm.unload_all_models()
    return weights


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def sample(comfy, model, clip, prompt="a painting by Van Gogh", seed=7):
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfy.nodes.KSampler().sample(model, seed, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def rows(encoding, clip, concepts, kind_templates=("{}", "a painting by {}")):
    from cure_core.concepts import expand, parse_concepts
    return encoding.encode_concepts(clip, expand(parse_concepts(concepts), kind_templates), "concept + end token").rows


@pytest.mark.parametrize("family", FAMILIES)
def test_only_cross_attention_keys_are_patched(family, tiny, erase):
    model, clip = tiny.tiny_model(family), tiny.tiny_clip(family)
    patched, report = erase(model, clip, FORGET, RETAIN)
    assert set(patched.patches) == set(cross_attention_keys(model))
    assert len(patched.patches) == 2 * len(cross_attention_keys(model, "to_k"))
    assert model.patches == {}                       # the input MODEL was cloned, not touched
    assert f"Edited {len(patched.patches)} layers" in report
    for key, patch_list in patched.patches.items():
        assert len(patch_list) == 1 and type(patch_list[0][1]).__name__ == "LoRAAdapter"
        up, down = patch_list[0][1].weights[:2]
        assert up.shape[1] == down.shape[0] < down.shape[1]   # low rank, not a dense diff


@pytest.mark.parametrize("family", FAMILIES)
def test_forget_key_value_outputs_fall_towards_zero(family, tiny, erase, comfy, encoding):
    model, clip = tiny.tiny_model(family), tiny.tiny_clip(family)
    forget = rows(encoding, clip, FORGET)
    other = rows(encoding, clip, "a red bicycle")
    keys = cross_attention_keys(model)
    original = loaded_weights(comfy, model, keys)
    previous = None
    for alpha in (2.0, 20.0, 1e4, 1e8):
        patched, _ = erase(model, clip, FORGET, "", alpha_forget=alpha, templates_text="{}\na painting by {}")
        edited = loaded_weights(comfy, patched, keys)
        ratio = max(float((forget @ edited[k].T).norm() / (forget @ original[k].T).norm()) for k in keys)
        if previous is not None:
            assert ratio < previous                  # larger alpha, stronger erasure
        previous = ratio
    assert previous < 1e-3                           # towards zero: W' e_f ≈ 0 for every forget embedding
    moved = max(float((other @ (edited[k] - original[k]).T).norm() / (other @ original[k].T).norm()) for k in keys)
    assert moved < 1.0                               # an unrelated prompt is not wiped out with it


@pytest.mark.parametrize("family", FAMILIES)
def test_retained_outputs_stay_put(family, tiny, erase, comfy, encoding):
    model, clip = tiny.tiny_model(family), tiny.tiny_clip(family)
    forget, retain = rows(encoding, clip, FORGET), rows(encoding, clip, RETAIN)
    keys = cross_attention_keys(model)
    original = loaded_weights(comfy, model, keys)
    patched, _ = erase(model, clip, FORGET, RETAIN, alpha_forget=50.0, alpha_retain=1e5,
                       templates_text="{}\na painting by {}")
    edited = loaded_weights(comfy, patched, keys)
    for k in keys:
        retain_moved = float((retain @ (edited[k] - original[k]).T).norm() / (retain @ original[k].T).norm())
        forget_moved = float((forget @ (edited[k] - original[k]).T).norm() / (forget @ original[k].T).norm())
        assert retain_moved < 1e-3, k
        assert forget_moved > 100 * retain_moved, k


@pytest.mark.parametrize("family", FAMILIES)
def test_original_model_samples_bit_identically_after_the_erased_clone(family, tiny, erase, comfy):
    model, clip = tiny.tiny_model(family), tiny.tiny_clip(family)
    weights_before = snapshot(model)
    before = sample(comfy, model, clip)
    patched, _ = erase(model, clip, FORGET, RETAIN)
    erased = sample(comfy, patched, clip)            # the clone is patched into the shared module here
    after = sample(comfy, model, clip)
    assert torch.isfinite(erased).all()
    assert not torch.equal(erased, before)           # the erasure changes what the sampler makes
    assert torch.equal(after, before)                # ... and the original still makes the same thing
    sample(comfy, patched, clip)
    comfy.mm.unload_all_models()
    assert_same_state(snapshot(model), weights_before)


def test_a_lora_applied_before_the_eraser_is_erased_too(tiny, erase, comfy, encoding):
    from comfy.weight_adapter import LoRAAdapter
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    keys = cross_attention_keys(model)
    forget = rows(encoding, clip, FORGET)
    g = torch.Generator().manual_seed(5)
    with_lora = model.clone()
    lora = {k: LoRAAdapter(set(), (torch.randn(model.model.state_dict()[k].shape[0], 4, generator=g),
                                   torch.randn(4, 64, generator=g), None, None, None, None)) for k in keys}
    assert set(with_lora.add_patches(lora, 0.5)) == set(keys)
    lora_weights = loaded_weights(comfy, with_lora, keys)
    patched, _ = erase(with_lora, clip, FORGET, "", alpha_forget=1e8, templates_text="{}\na painting by {}")
    assert all(len(patched.patches[k]) == 2 for k in keys)        # the LoRA stays, the erasure stacks on it
    edited = loaded_weights(comfy, patched, keys)
    for k in keys:
        assert float((forget @ edited[k].T).norm() / (forget @ lora_weights[k].T).norm()) < 1e-3


def test_strength_scales_the_update(tiny, erase, comfy):
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    keys = cross_attention_keys(model)
    original = loaded_weights(comfy, model, keys)
    full = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=1.0)[0], keys)
    half = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=0.5)[0], keys)
    none = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=0.0)[0], keys)
    for k in keys:
        assert torch.allclose(half[k] - original[k], 0.5 * (full[k] - original[k]), atol=1e-6)
        assert torch.equal(none[k], original[k])


def test_sdxl_pooled_path_is_edited_on_request(tiny, erase, comfy, encoding):
    from cure_core.concepts import TEMPLATES, expand
    model, clip = tiny.tiny_model("SDXL"), tiny.tiny_clip("SDXL")
    key = "diffusion_model.label_emb.0.0.weight"
    without, report_without = erase(model, clip, FORGET, RETAIN)
    assert key not in without.patches
    patched, report = erase(model, clip, FORGET, "", erase_pooled=True, alpha_forget=1e8)
    assert key in patched.patches and "Pooled path" in report
    pooled = encoding.encode_concepts(clip, expand(["Van Gogh", "Starry Night"], TEMPLATES["style"]),
                                      "concept + end token", with_pooled=True).pooled
    width = pooled.shape[1]
    original = loaded_weights(comfy, model, [key])[key]
    edited = loaded_weights(comfy, patched, [key])[key]
    assert torch.equal(edited[:, width:], original[:, width:])   # size/crop embeddings are not touched
    assert float((pooled @ edited[:, :width].T).norm() / (pooled @ original[:, :width].T).norm()) < 1e-3
    assert not torch.isfinite(sample(comfy, patched, clip)).logical_not().any()


def test_pooled_option_on_a_family_without_pooled_path_is_reported(tiny, erase):
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    patched, report = erase(model, clip, FORGET, "", erase_pooled=True)
    assert "has none" in report
    assert all("label_emb" not in k for k in patched.patches)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn], ids=str)
def test_low_precision_weights_are_edited_in_float32_and_cast_back(dtype, tiny, erase, comfy, encoding):
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    keys = cross_attention_keys(model)
    with torch.no_grad():
        for key in keys:
            comfy.utils.set_attr_param(model.model, key, comfy.utils.get_attr(model.model, key).to(dtype))
    forget = rows(encoding, clip, FORGET)
    original = loaded_weights(comfy, model, keys)
    patched, _ = erase(model, clip, FORGET, "", alpha_forget=1e8, templates_text="{}\na painting by {}")
    comfy.mm.load_models_gpu([patched], force_full_load=True)
    assert all(comfy.utils.get_attr(patched.model, k).dtype == dtype for k in keys)   # cast back by ComfyUI
    comfy.mm.unload_all_models()
    edited = loaded_weights(comfy, patched, keys)
    # what is left of the forget outputs is the rounding of the low-precision weight, nothing more
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float8_e4m3fn: 0.15}[dtype]
    for k in keys:
        assert float((forget @ edited[k].T).norm() / (forget @ original[k].T).norm()) < tolerance, k


@pytest.mark.parametrize("family", ["SD1.x", "SDXL"])
@pytest.mark.parametrize("concept", ["Van Gogh", "Star Wars: A New Hope", "Mickey Mouse (character)", "a"])
def test_concept_tokens_are_located_exactly(family, concept, tiny, encoding):
    clip = tiny.tiny_clip(family)
    tokens, positions = encoding.locate_concept(clip, concept, "a painting of ", ", detailed")
    hf_tokenizer = clip.tokenizer.clip_l.tokenizer
    expected = hf_tokenizer(concept)["input_ids"][1:-1]           # the concept alone, without start/end
    for key, chunks in tokens.items():
        ids = [t[0] for t in chunks[0]]
        assert [ids[i] for i in positions.concept] == expected, key
        assert ids[positions.end] == hf_tokenizer.eos_token_id          # the end token right after the prompt
        assert 0 not in positions.content                              # never the start token
