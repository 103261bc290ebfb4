"""The eraser on ComfyUI 0.3.75's own model classes (tiny, random weights, real tokenizers and text encoders)."""
import re

import pytest
import torch

from conftest import pack_module

FAMILIES = ["SD1.x", "SD2.x", "SDXL", "SD3", "Flux", "Chroma", "Wan 2.1", "LTX-Video", "Mochi", "PixArt", "HunyuanVideo",
            "Stable Cascade", "Cosmos Predict2", "Cosmos 1.0", "Lumina 2", "Qwen-Image", "HiDream", "Hunyuan-DiT"]
FORGET, RETAIN = "Van Gogh\nStarry Night", "Claude Monet\nwatercolor"
# What each family must have edited, written independently of the pack's own family table.
TEXT_LAYERS = {
    "SD1.x": r"^diffusion_model\..*\.attn2\.to_[kv]\.weight$",
    "SD2.x": r"^diffusion_model\..*\.attn2\.to_[kv]\.weight$",
    "SDXL": r"^diffusion_model\..*\.attn2\.to_[kv]\.weight$",
    "SD3": r"^diffusion_model\.context_embedder\.weight$",
    "Flux": r"^diffusion_model\.txt_in\.weight$",
    "Chroma": r"^diffusion_model\.txt_in\.weight$",
    "Wan 2.1": r"^diffusion_model\.text_embedding\.0\.weight$",
    "LTX-Video": r"^diffusion_model\.caption_projection\.linear_1\.weight$",
    "Mochi": r"^diffusion_model\.(t5_yproj|t5_y_embedder\.to_kv|t5_y_embedder\.to_q)\.weight$",
    "PixArt": r"^diffusion_model\.y_embedder\.y_proj\.fc1\.weight$",
    "HunyuanVideo": r"^diffusion_model\.txt_in\.(input_embedder|c_embedder\.in_layer)\.weight$",
    "Stable Cascade": r"^diffusion_model\.clip_txt_mapper\.weight$",
    "Cosmos Predict2": r"^diffusion_model\.blocks\.\d+\.cross_attn\.[kv]_proj\.weight$",
    "Cosmos 1.0": r"^diffusion_model\.blocks\.block\d+\.blocks\.1\.block\.attn\.to_[kv]\.0\.weight$",
    "Lumina 2": r"^diffusion_model\.cap_embedder\.1\.weight$",
    "Qwen-Image": r"^diffusion_model\.txt_in\.weight$",
    "HiDream": r"^diffusion_model\.caption_projection\.\d+\.linear\.weight$",
    "Hunyuan-DiT": r"^diffusion_model\.(blocks\.\d+\.attn2\.kv_proj|mlp_t5\.0|pooler\.[kqv]_proj)\.weight$",
}
# Lumina 2's and Qwen-Image's edited layers read the rows through an RMSNorm: the tests apply it themselves.
RMS_NORM_BEFORE = {"Lumina2": ("diffusion_model.cap_embedder.0.weight", 1e-5),
                   "QwenImage": ("diffusion_model.txt_norm.weight", 1e-6)}
POOLED = {"SDXL": "diffusion_model.label_emb.0.0.weight", "SD3": "diffusion_model.y_embedder.mlp.0.weight",
          "Flux": "diffusion_model.vector_in.in_layer.weight",
          "HunyuanVideo": "diffusion_model.vector_in.in_layer.weight",
          "Stable Cascade": "diffusion_model.clip_txt_pooled_mapper.weight",
          "HiDream": "diffusion_model.p_embedder.pooled_embedder.linear_1.weight"}


def layer_reads(model, key):
    """``(tokenizer key, CLIP output, hidden layer)`` a layer reads, for the families whose layers read different
    encoder outputs (from comfy/ldm/hidream/model.py and comfy/ldm/hydit/models.py); None for the others."""
    config_name = type(model.model.model_config).__name__
    if config_name == "HiDream":        # caption_projection.i reads Llama layer llama_layers[i], the last one T5
        index, llama_layers = int(key.split(".")[2]), model.model.diffusion_model.llama_layers
        return ("t5xxl", "cond", None) if index == len(llama_layers) else \
            ("llama", "conditioning_llama3", llama_layers[index])
    if config_name == "HunyuanDiT":     # cross-attention reads the BERT rows, mlp_t5 and the pool the mT5 rows
        return ("hydit_clip", "cond", None) if ".attn2.kv_proj." in key else ("mt5xl", "conditioning_mt5xl", None)
    return None


@pytest.fixture(scope="module")
def encoding(pack):
    return pack_module("comfy_glue.encoding")


def text_layer_keys(model, family):
    pattern = re.compile(TEXT_LAYERS[family])
    return [k for k in model.model.state_dict() if pattern.match(k)]


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
    latent_format = model.model.latent_format
    frames = (1,) if getattr(latent_format, "latent_dimensions", 2) == 3 else ()    # video: one latent frame
    size = 64 if type(model.model.model_config).__name__.startswith("PixArt") else 8   # PixArt needs >= 64
    latent = {"samples": torch.zeros(1, latent_format.latent_channels, *frames, size, size)}
    return comfy.nodes.KSampler().sample(model, seed, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def rows(encoding, model, clip, concepts, kind_templates=("{}", "a painting by {}"), key=None, selection=None):
    """The concept rows the layer ``key`` reads (any edited layer where they all read the same), as the node
    selects them by default (or with ``selection``)."""
    from cure_core.concepts import TOKEN_SELECTIONS, expand, parse_concepts
    from cure_core.families import TextSegment, family_for_config
    config_name = type(model.model.model_config).__name__
    segments = family_for_config(config_name).segments
    read = None if key is None else layer_reads(model, key)
    if read is not None:
        segments = (TextSegment(read[0], output=read[1], hidden_layer=read[2]),)
    out = encoding.encode_concept_sets(clip, [expand(parse_concepts(concepts), kind_templates)],
                                       selection or TOKEN_SELECTIONS[0], segments)[0].rows
    if config_name in RMS_NORM_BEFORE:
        key, eps = RMS_NORM_BEFORE[config_name]
        weight = model.model.state_dict()[key].float()
        out = out / torch.sqrt(out.pow(2).mean(-1, keepdim=True) + eps) * weight
    return out


def layer_rows(encoding, model, clip, concepts, keys, **options):
    """:func:`rows` for every key."""
    return {k: rows(encoding, model, clip, concepts, key=k, **options) for k in keys}


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_text_reading_layers_are_patched(family, built, erase):
    model, clip = built(family)
    patched, report = erase(model, clip, FORGET, RETAIN)
    expected = text_layer_keys(model, family)
    assert expected and set(patched.patches) == set(expected)
    assert model.patches == {}                       # the input MODEL was cloned, not touched
    assert f"Edited {len(expected)} layer" in report
    for key, patch_list in patched.patches.items():
        from comfy.weight_adapter import LoRAAdapter
        assert len(patch_list) == 1 and isinstance(patch_list[0][1], LoRAAdapter)    # ComfyUI's own LoRA patch
        up, down = patch_list[0][1].weights[:2]
        assert up.shape[1] == down.shape[0] <= down.shape[1]  # a LoRA pair: (out, k) @ (k, in), not a dense diff


@pytest.mark.parametrize("family", FAMILIES)
def test_forget_key_value_outputs_fall_towards_zero(family, built, erase, comfy, encoding):
    model, clip = built(family)
    keys = text_layer_keys(model, family)
    forget = layer_rows(encoding, model, clip, FORGET, keys)
    other = layer_rows(encoding, model, clip, "a red bicycle", keys)
    original = loaded_weights(comfy, model, keys)
    previous = None
    for alpha in (2.0, 20.0, 1e4, 1e8):
        patched, _ = erase(model, clip, FORGET, "", alpha_forget=alpha, templates_text="{}\na painting by {}")
        edited = loaded_weights(comfy, patched, keys)
        ratio = max(float((forget[k] @ edited[k].T).norm() / (forget[k] @ original[k].T).norm()) for k in keys)
        if previous is not None:
            assert ratio < previous                  # larger alpha, stronger erasure
        previous = ratio
    assert previous < 1e-3                           # towards zero: W' e_f ≈ 0 for every forget embedding
    moved = max(float((other[k] @ (edited[k] - original[k]).T).norm() / (other[k] @ original[k].T).norm())
                for k in keys)
    assert moved < 1.0                               # an unrelated prompt is not wiped out with it


@pytest.mark.parametrize("family", FAMILIES)
def test_retained_outputs_stay_put(family, built, erase, comfy, encoding):
    """On the prompts' own rows: in these 64-wide random encoders the contributions of two retained concepts
    over every padded row span nearly the whole space, and a hard retain set would leave nothing to erase."""
    model, clip = built(family)
    keys = text_layer_keys(model, family)
    selection = "concept + end token"
    forget = layer_rows(encoding, model, clip, FORGET, keys, selection=selection)
    retain = layer_rows(encoding, model, clip, RETAIN, keys, selection=selection)
    original = loaded_weights(comfy, model, keys)
    patched, _ = erase(model, clip, FORGET, RETAIN, alpha_forget=50.0, alpha_retain=1e8,
                       templates_text="{}\na painting by {}", token_selection=selection)
    edited = loaded_weights(comfy, patched, keys)
    for k in keys:
        retain_moved = float((retain[k] @ (edited[k] - original[k]).T).norm() / (retain[k] @ original[k].T).norm())
        forget_moved = float((forget[k] @ (edited[k] - original[k]).T).norm() / (forget[k] @ original[k].T).norm())
        assert retain_moved < 1e-3, k
        assert forget_moved > 100 * retain_moved, k


@pytest.mark.parametrize("family", FAMILIES)
def test_original_model_samples_bit_identically_after_the_erased_clone(family, built, erase, comfy):
    model, clip = built(family)
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


def layer_inputs(comfy, model, clip, prompt, keys):
    """What each layer receives in a real sampling step on ``prompt`` (cfg 1: the prompt's batch alone), as rows."""
    seen = {}

    def recorder(key):
        def record(_module, inputs):
            seen.setdefault(key, inputs[0].detach().float().reshape(-1, inputs[0].shape[-1]).clone())
        return record

    handles = [comfy.utils.get_attr(model.model, k.removesuffix(".weight")).register_forward_pre_hook(recorder(k))
               for k in keys]
    try:
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        latent = {"samples": torch.zeros(1, model.model.latent_format.latent_channels, 8, 8)}
        comfy.nodes.KSampler().sample(model, 0, 1, 1.0, "euler", "normal", conditioning, conditioning, latent)
    finally:
        for handle in handles:
            handle.remove()
    comfy.mm.unload_all_models()
    return seen


@pytest.mark.parametrize("family", ["HiDream", "Hunyuan-DiT"])
def test_each_layer_is_erased_in_the_rows_it_receives_while_sampling(family, built, erase, comfy):
    """For the families whose layers read different encoder outputs (HiDream's Llama layers and T5, Hunyuan-DiT's
    BERT and mT5): the prompt's rows, captured at each edited layer's input during sampling, are erased there."""
    model, clip = built(family)
    keys = [k for k in text_layer_keys(model, family) if not k.endswith("pooler.q_proj.weight")]   # reads a mean
    prompt = "Van Gogh"
    seen = layer_inputs(comfy, model, clip, prompt, keys)
    patched, _ = erase(model, clip, prompt, "", kind="raw text", alpha_forget=1e8, token_selection="all prompt tokens")
    original, edited = loaded_weights(comfy, model, keys), loaded_weights(comfy, patched, keys)
    tokens = clip.tokenize(prompt, return_word_ids=True)
    state = model.model.state_dict()
    for key in keys:
        flat = [t for chunk in tokens[layer_reads(model, key)[0]] for t in chunk]
        content = [i for i, t in enumerate(flat) if t[2] > 0]
        rows = seen[key]
        if ".pooler." in key:        # the attention pool reads [mean, rows] + its positional embedding
            rows = (rows - state["diffusion_model.pooler.positional_embedding"].float())[1:]
        prompt_rows = rows[content + [content[-1] + 1]]                    # the prompt's tokens and its end token
        assert float((prompt_rows @ edited[key].T).norm() / (prompt_rows @ original[key].T).norm()) < 1e-3, key


def test_hidream_without_its_llama_edits_the_t5_projection_only(tiny, built, erase):
    """A HiDream CLIP may lack the Llama (ComfyUI then gives the model zeros there): only what reads T5 is edited."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.hidream
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.hidream.HiDreamTokenizer,
                                                     comfy.text_encoders.hidream.hidream_clip(llama=False))
    clip = comfy.sd.CLIP(target=target, model_options={**tiny._SPECS["HiDream"][2], "dtype": torch.float32})
    tiny.randomize(clip.cond_stage_model, 1)
    model = built("HiDream")[0]
    patched, report = erase(model, clip, FORGET, RETAIN)
    assert set(patched.patches) == {"diffusion_model.caption_projection.4.linear.weight"}
    assert "Not edited: 4 layer(s) that read an encoder this CLIP does not have" in report


def test_a_lora_applied_before_the_eraser_is_erased_too(tiny, erase, comfy, encoding):
    from comfy.weight_adapter import LoRAAdapter
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    keys = text_layer_keys(model, "SD1.x")
    forget = rows(encoding, model, clip, FORGET)
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


def test_strength_scales_the_update(built, erase, comfy):
    model, clip = built("SD1.x")
    keys = text_layer_keys(model, "SD1.x")
    original = loaded_weights(comfy, model, keys)
    full = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=1.0)[0], keys)
    half = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=0.5)[0], keys)
    none = loaded_weights(comfy, erase(model, clip, FORGET, RETAIN, strength=0.0)[0], keys)
    for k in keys:
        assert torch.allclose(half[k] - original[k], 0.5 * (full[k] - original[k]), atol=1e-6)
        assert torch.equal(none[k], original[k])


@pytest.mark.parametrize("family", sorted(POOLED))
def test_pooled_path_is_edited_on_request(family, built, erase, comfy, encoding):
    from cure_core.concepts import TEMPLATES, expand
    from cure_core.families import family_for_config
    model, clip = built(family)
    key = POOLED[family]
    without, _ = erase(model, clip, FORGET, RETAIN)
    assert key not in without.patches
    patched, report = erase(model, clip, FORGET, "", erase_pooled=True, alpha_forget=1e8)
    assert key in patched.patches and "Pooled path" in report
    text_key = text_layer_keys(model, family)[0]
    segments = family_for_config(type(model.model.model_config).__name__).reads(
        text_key, model.model.model_config.unet_config)              # the pooled vector comes with any of them
    pooled = encoding.encode_concept_sets(clip, [expand(["Van Gogh", "Starry Night"], TEMPLATES["style"])],
                                          "concept + end token", segments, with_pooled=True)[0].pooled
    width = pooled.shape[1]
    original = loaded_weights(comfy, model, [key])[key]
    edited = loaded_weights(comfy, patched, [key])[key]
    assert torch.equal(edited[:, width:], original[:, width:])   # SDXL's size/crop embeddings are not touched
    assert float((pooled @ edited[:, :width].T).norm() / (pooled @ original[:, :width].T).norm()) < 1e-3
    assert torch.isfinite(sample(comfy, patched, clip)).all()


def test_pooled_option_on_a_family_without_pooled_path_is_reported(built, erase):
    model, clip = built("SD1.x")
    patched, report = erase(model, clip, FORGET, "", erase_pooled=True)
    assert "has none" in report
    assert all("label_emb" not in k for k in patched.patches)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn], ids=str)
def test_low_precision_weights_are_edited_in_float32_and_cast_back(dtype, tiny, erase, comfy, encoding):
    model, clip = tiny.tiny_model("SD1.x"), tiny.tiny_clip("SD1.x")
    keys = text_layer_keys(model, "SD1.x")
    with torch.no_grad():
        for key in keys:
            comfy.utils.set_attr_param(model.model, key, comfy.utils.get_attr(model.model, key).to(dtype))
    forget = rows(encoding, model, clip, FORGET)
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


@pytest.mark.parametrize("family", ["SD1.x", "SDXL", "Flux"])
@pytest.mark.parametrize("concept", ["Van Gogh", "Star Wars: A New Hope", "Mickey Mouse (character)", "a"])
def test_concept_tokens_are_located_exactly(family, concept, built, encoding):
    clip = built(family)[1]
    keys = {"SD1.x": ["l"], "SDXL": ["g", "l"], "Flux": ["l", "t5xxl"]}[family]
    from cure_core.families import TextSegment
    tokens, positions = encoding.locate_concept(clip, concept, "a painting of ", ", detailed",
                                                [TextSegment(k) for k in keys])
    for key in keys:
        sub = getattr(clip.tokenizer, {"l": "clip_l", "g": "clip_g", "t5xxl": "t5xxl"}[key])
        expected = sub.tokenizer(concept)["input_ids"][sub.tokens_start:-1]   # the concept alone
        ids = [t[0] for t in tokens[key][0]]
        assert [ids[i] for i in positions[key].concept] == expected, key
        assert ids[positions[key].end] == sub.end_token, key         # the end token right after the prompt
        assert ids[0] != sub.start_token or 0 not in positions[key].content   # never the start token


def test_concept_contribution_is_the_prompt_minus_the_template_row_by_row(built, encoding):
    """SD1.x pads with its end token, so "a painting by Van Gogh" and "a painting by" both give 77 rows and the
    concept's two tokens stand where the shorter prompt has its first two end tokens: the contribution is the
    rows after the concept, position by position, and the concept's tokens against those two end tokens (as
    means). The rows before the concept are equal (a causal encoder) and carry nothing."""
    from cure_core.concepts import CONTRIBUTION, expand
    from cure_core.families import family_for_config
    model, clip = built("SD1.x")
    with_concept = clip.encode_from_tokens(clip.tokenize("a painting by Van Gogh"))[0].float()
    without = clip.encode_from_tokens(clip.tokenize("a painting by"))[0].float()
    assert torch.equal(with_concept[:4], without[:4])            # start token, "a", "painting", "by"
    expected = torch.cat([with_concept[6:] - without[6:], (with_concept[4:6] - without[4:6]).mean(0, keepdim=True)])
    got = encoding.encode_concept_sets(clip, [expand(["Van Gogh"], ("a painting by {}",))], CONTRIBUTION,
                                       family_for_config("SD15").segments)[0]
    assert got.tokens_per_concept == {"Van Gogh": 72}
    assert torch.allclose(got.rows.T @ got.rows, expected.T @ expected, rtol=1e-4, atol=1e-4)   # the same rows


def _random_patcher(tiny, config):
    """A CPU ModelPatcher around ``config``'s model with random weights."""
    import comfy.model_patcher
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    tiny.randomize(model.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


@pytest.mark.parametrize("config_name, overrides", [
    ("WAN21_I2V", {"model_type": "i2v", "in_dim": 36}),        # image-to-video: same text path, CLIP-vision added
    ("WAN22_T2V", {"out_dim": 48, "in_dim": 48}),               # Wan 2.2 5B: 48-channel latents
])
def test_wan_variants_are_erased_through_the_same_text_layer(config_name, overrides, tiny, erase, built):
    import comfy.supported_models
    base = tiny._SPECS["Wan 2.1"][1]
    patcher = _random_patcher(tiny, getattr(comfy.supported_models, config_name)({**base, **overrides}))
    patched, report = erase(patcher, built("Wan 2.1")[1], FORGET, RETAIN)
    assert set(patched.patches) == {"diffusion_model.text_embedding.0.weight"}
    assert f"ComfyUI model type {config_name}" in report


def test_hunyuan_dit_1_0_is_erased_through_the_same_layers(tiny, erase, built):
    """Hunyuan-DiT 1.0/1.1 (ComfyUI's HunyuanDiT1: size and style conditions added) reads the text the same way."""
    import comfy.supported_models
    patcher = _random_patcher(tiny, comfy.supported_models.HunyuanDiT1({
        **tiny._SPECS["Hunyuan-DiT"][1], "image_model": "hydit1", "size_cond": True, "use_style_cond": True}))
    patched, report = erase(patcher, built("Hunyuan-DiT")[1], FORGET, RETAIN)
    assert set(patched.patches) == set(text_layer_keys(patcher, "Hunyuan-DiT")) == set(
        text_layer_keys(built("Hunyuan-DiT")[0], "Hunyuan-DiT"))
    assert "ComfyUI model type HunyuanDiT1" in report


def test_robust_mode_is_the_same_erasure_as_its_context_templates_written_out(built, erase, comfy):
    """robust_contexts=N reads each forget concept through the kind's templates plus the 2N context templates of
    cure_core.robust: exactly the erasure of those templates typed in (at the robust mode's automatic alpha_forget),
    with the retain set read as usual."""
    from cure_core.concepts import TEMPLATES
    from cure_core.robust import ROBUST_ALPHA, context_templates
    model, clip = built("SD1.x")
    keys = text_layer_keys(model, "SD1.x")
    robust, report = erase(model, clip, FORGET, "", "style", robust_contexts=3)
    written = "\n".join(TEMPLATES["style"] + context_templates(TEMPLATES["style"], 3))
    typed, _ = erase(model, clip, FORGET, "", "style", written, ROBUST_ALPHA)
    plain, _ = erase(model, clip, FORGET, "", "style")
    robust_w, typed_w, plain_w = (loaded_weights(comfy, m, keys) for m in (robust, typed, plain))
    for k in keys:
        assert torch.allclose(robust_w[k], typed_w[k], atol=1e-6)
    assert any(not torch.allclose(robust_w[k], plain_w[k], atol=1e-4) for k in keys)
    assert "Robust mode: each forget concept also read with 3 context words" in report
    erasure, = pack_module("comfy_glue.patching").erasures_on(robust)
    assert erasure.record.recipe["robust_contexts"] == "3" and erasure.record.recipe["alpha_forget"] == "10"
    chosen, _ = erase(model, clip, FORGET, "", "style", robust_contexts=3, alpha_forget=3.0)    # a typed alpha wins
    assert pack_module("comfy_glue.patching").erasures_on(chosen)[0].record.recipe["alpha_forget"] == "3"
    for bad in (-1, 10_000, 2.5):
        with pytest.raises(ValueError, match="robust_contexts"):
            erase(model, clip, FORGET, "", "style", robust_contexts=bad)
