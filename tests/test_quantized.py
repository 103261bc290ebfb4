"""The checkpoints users load: scaled fp8, ComfyUI's mixed-precision layout, plain fp8 through the loader's
``weight_dtype``, and GGUF through ComfyUI-GGUF, for SD1.x and Wan 2.1.

Every file is written by the test (``testbed/checkpoint_formats.py``) from one tiny model's fp16 weights and
loaded by the loader a user would use: the stock *Load Diffusion Model* (``UNETLoader``) and ComfyUI-GGUF's
*Unet Loader (GGUF)* with its own model patcher (installed into the test ComfyUI by ``scripts/setup.sh``).
What a layer computes with is read from the layer itself, as its function on the identity matrix, so the
checks do not rely on the pack's own weight reading.

A format's resolution is measured on the weights themselves: the relative difference between the weight
the loaded model computes with and the fp16 file's (0 for fp16, about 0.5 % for Q8_0, 3 % for fp8 e4m3,
5 % for e5m2, 8 % for our Q4_K). Stochastic rounding, which ComfyUI uses to store a patched weight back in
fp8, errs up to about √2 times more than rounding to nearest: the checks allow twice the resolution.
"""
from __future__ import annotations

import pytest
import torch

from conftest import pack_module
from scripts.comfy_env import load_installed_pack

FORGET, RETAIN = "Van Gogh\nStarry Night", "Claude Monet"
FAMILIES = {"SD1.x loadable": "sd1", "Wan 2.1 loadable": "wan"}       # family -> GGUF architecture
FORMATS = ("fp16", "scaled fp8", "mixed precision", "fp8 e4m3fn weight_dtype", "fp8 e5m2 weight_dtype",
           "GGUF Q8_0", "GGUF Q4_K")
QUANTIZED = FORMATS[1:]
CASES = [(family, fmt) for family in FAMILIES for fmt in FORMATS]


@pytest.fixture(scope="module")
def gguf_pack(pack):
    return load_installed_pack("ComfyUI-GGUF")


@pytest.fixture(scope="module")
def checkpoints(tiny, comfy, gguf_pack, tmp_path_factory):
    """Every family's diffusion model in every format, in a folder the loaders are pointed at."""
    import folder_paths
    formats = pack_module("testbed.checkpoint_formats")
    folder = tmp_path_factory.mktemp("diffusion_models")
    fp16 = {}
    for family, arch in FAMILIES.items():
        state = {k: v.to(torch.float16) for k, v in tiny.tiny_model(family).model.diffusion_model.state_dict().items()}
        fp16[family] = state
        comfy.utils.save_torch_file(state, str(folder / f"{arch}_fp16.safetensors"))
        comfy.utils.save_torch_file(formats.scaled_fp8(state), str(folder / f"{arch}_fp8_scaled.safetensors"))
        tensors, metadata = formats.mixed_precision(state)
        comfy.utils.save_torch_file(tensors, str(folder / f"{arch}_mixed.safetensors"), metadata=metadata)
        formats.write_gguf(folder / f"{arch}-Q8_0.gguf", state, arch, "Q8_0")
        formats.write_gguf(folder / f"{arch}-Q4_K.gguf", state, arch, "Q4_K")
    with pytest.MonkeyPatch.context() as patch:
        for name, extensions in (("diffusion_models", {".safetensors"}), ("unet_gguf", {".gguf"})):
            patch.setitem(folder_paths.folder_names_and_paths, name, ([str(folder)], extensions))
        yield fp16


def load(family: str, fmt: str, comfy, gguf_pack):
    """The model as a user loads the file of ``fmt``."""
    arch = FAMILIES[family]
    unet = comfy.nodes.UNETLoader()
    gguf_loader = gguf_pack.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]()
    loaders = {
        "fp16": lambda: unet.load_unet(f"{arch}_fp16.safetensors", "default"),
        "scaled fp8": lambda: unet.load_unet(f"{arch}_fp8_scaled.safetensors", "default"),
        "mixed precision": lambda: unet.load_unet(f"{arch}_mixed.safetensors", "default"),
        "fp8 e4m3fn weight_dtype": lambda: unet.load_unet(f"{arch}_fp16.safetensors", "fp8_e4m3fn"),
        "fp8 e5m2 weight_dtype": lambda: unet.load_unet(f"{arch}_fp16.safetensors", "fp8_e5m2"),
        "GGUF Q8_0": lambda: gguf_loader.load_unet(f"{arch}-Q8_0.gguf"),
        "GGUF Q4_K": lambda: gguf_loader.load_unet(f"{arch}-Q4_K.gguf"),
    }
    return loaders[fmt]()[0]


@pytest.fixture(scope="module")
def clips(tiny):
    return {family: tiny.tiny_clip(family) for family in FAMILIES}


@torch.no_grad()
def computed_weights(comfy, model, keys) -> dict[str, torch.Tensor]:
    """What each layer computes with, loaded the way sampling loads the model: ``layer(I) − layer(0)``, transposed."""
    comfy.mm.load_models_gpu([model], force_full_load=True)
    weights = layer_functions(comfy, model, keys)
    comfy.mm.unload_all_models()
    return weights


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def patch_products(model, forget: str | None = None) -> dict[str, torch.Tensor]:
    """``strength · up @ down`` of the erasure patches on ``model`` (only the erasure of ``forget`` when given;
    one per layer here)."""
    products = {}
    for key, patch_list in model.patches.items():
        assert forget is not None or len(patch_list) == 1, key
        for strength, adapter, *_ in patch_list:
            if forget is None or getattr(adapter, "recipe", {}).get("forget") == forget:
                up, down = adapter.weights[:2]
                products[key] = strength * up.float() @ down.float()
    return products


@pytest.fixture(scope="module")
def erased(checkpoints, clips, comfy, gguf_pack, erase):
    """Per (family, format): the loaded model, its erased clone, and the layers the sampler computes with."""
    cache = {}

    def get(family, fmt):
        if (family, fmt) not in cache:
            model = load(family, fmt, comfy, gguf_pack)
            patched, report = erase(model, clips[family], FORGET, RETAIN)
            keys = sorted(patched.patches)
            cache[family, fmt] = (model, patched, report, computed_weights(comfy, model, keys),
                                  computed_weights(comfy, patched, keys))
        return cache[family, fmt]
    return get


def resolution(family, fmt, checkpoints, erased) -> float:
    """The format's relative error on these weights (0 for the fp16 file)."""
    base = erased(family, fmt)[3]
    return max(relative(w, checkpoints[family][k.removeprefix("diffusion_model.")].float()) for k, w in base.items())


@pytest.mark.parametrize("family, fmt", CASES)
def test_the_sampler_computes_with_the_dequantized_weight_times_the_eraser(family, fmt, checkpoints, erased):
    """The patch is computed from the weights the model computes with (not the stored fp8 values or GGUF
    blocks), so it is the fp16 model's edit within the format's resolution, and ComfyUI (or ComfyUI-GGUF)
    applies it on top of the dequantized weight."""
    _, patched, report, base, used = erased(family, fmt)
    _, reference, _, reference_base, _ = erased(family, "fp16")
    tolerance = 2 * resolution(family, fmt, checkpoints, erased) + 1e-5
    edits, reference_edits = patch_products(patched), patch_products(reference)
    assert edits.keys() == reference_edits.keys() and edits
    for key, edit in edits.items():
        assert relative(edit, reference_edits[key]) <= tolerance, key
        assert relative(used[key], base[key] + edit) <= tolerance, key
        # The edit removes what the fp16 model's edit removes: W (I − P) within the resolution.
        assert relative(used[key], reference_base[key] + reference_edits[key]) <= tolerance + 1e-5, key
    assert "CURE Spectral Eraser" in report
    assert f"Weights as stored: {pack_module('comfy_glue.weights').weight_format(patched, sorted(edits)[0])}" in report


def test_gguf_and_fp8_weights_are_read_in_their_own_format(checkpoints, erased):
    weights = pack_module("comfy_glue.weights")
    expected = {"fp16": "float32", "scaled fp8": "scaled float8_e4m3fn",
                "mixed precision": "quantized TensorCoreFP8Layout (float8_e4m3fn)",
                "fp8 e4m3fn weight_dtype": "float8_e4m3fn", "fp8 e5m2 weight_dtype": "float8_e5m2",
                "GGUF Q8_0": "GGUF Q8_0", "GGUF Q4_K": "GGUF Q4_K"}
    for fmt, text in expected.items():
        model, patched, *_ = erased("SD1.x loadable", fmt)
        key = sorted(patched.patches)[0]
        assert weights.weight_format(model, key) == text
        assert weights.weight_shape(model, key) == tuple(checkpoints["SD1.x loadable"][key.removeprefix(
            "diffusion_model.")].shape)


@pytest.mark.parametrize("family, fmt", [(f, m) for f in FAMILIES for m in QUANTIZED])
def test_sampling_runs_and_the_loaded_model_is_untouched(family, fmt, clips, erased, comfy):
    model, patched, _, base, _ = erased(family, fmt)
    clip = clips[family]
    positive = [[clip.encode_from_tokens(clip.tokenize("a painting by Van Gogh")), {}]]
    negative = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    video = family.startswith("Wan")
    latent = {"samples": torch.zeros((1, 16, 1, 4, 4) if video else (1, 4, 8, 8))}
    with torch.no_grad():
        samples = comfy.nodes.common_ksampler(patched, 0, 2, 3.0, "euler", "simple", positive, negative, latent)[0]
    assert torch.isfinite(samples["samples"]).all()
    assert model.patches == {}
    after = computed_weights(comfy, model, sorted(base))
    for key, weight in base.items():
        assert torch.equal(after[key], weight), key


@pytest.mark.parametrize("family, fmt", [(f, m) for f in FAMILIES for m in QUANTIZED])
def test_a_lora_saved_on_the_quantized_model_erases_the_full_precision_one(family, fmt, checkpoints, erased, comfy):
    """Save Erasure as LoRA on the quantized model, loaded by the stock LoRA loading onto the fp16 model,
    gives the fp16 model's own erasure within the format's resolution."""
    from comfy.sd import load_lora_for_models
    export = pack_module("comfy_glue.lora_export")
    _, patched, *_ = erased(family, fmt)
    full, reference, _, _, reference_used = erased(family, "fp16")
    lora, _ = export.erasure_lora(patched, torch.float32)
    loaded, _ = load_lora_for_models(full, None, lora, 1.0, 0.0)
    got = computed_weights(comfy, loaded, sorted(reference_used))
    tolerance = 2 * resolution(family, fmt, checkpoints, erased) + 1e-5
    for key, weight in reference_used.items():
        assert relative(got[key], weight) <= tolerance, key


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_an_erasure_file_moves_between_a_checkpoint_and_its_quantized_copy(fmt, checkpoints, erased, tiny, comfy,
                                                                             tmp_path):
    """The exact check refuses the other precision and says what to do; 'same checkpoint, any precision'
    applies the file both ways; another checkpoint is refused either way."""
    layout = pack_module("cure_core.erasure_file")
    files = pack_module("comfy_glue.erasure_files")
    family = "Wan 2.1 loadable" if "GGUF" in fmt else "SD1.x loadable"
    quantized, patched, *_ = erased(family, fmt)
    full, full_patched, *_ = erased(family, "fp16")
    for source, target in ((patched, full), (full_patched, quantized)):
        path = tmp_path / "erasure.safetensors"
        layout.save_erasure_file(path, files.erasure_file_of(source))
        saved = layout.load_erasure_file(path)
        with pytest.raises(ValueError, match="same checkpoint, any precision"):
            files.apply_erasure_file(target, saved)
        applied, report = files.apply_erasure_file(target, saved, base_check=files.ANY_PRECISION)
        assert "same checkpoint at any precision" in report
        edits = patch_products(source)
        expected = {k: w + edits[k] for k, w in computed_weights(comfy, target, sorted(edits)).items()}
        got = computed_weights(comfy, applied, sorted(expected))
        tolerance = 2 * resolution(family, fmt, checkpoints, erased) + 1e-5
        for key, weight in expected.items():
            assert relative(got[key], weight) <= tolerance, key
    other = tiny.tiny_model(family, seed=7)
    with pytest.raises(ValueError, match="differs by"):
        files.apply_erasure_file(other, saved, base_check=files.ANY_PRECISION)


@pytest.mark.parametrize("fmt", ["scaled fp8", "GGUF Q4_K"])
def test_every_weight_reading_node_works_on_quantized_models(fmt, checkpoints, clips, erased, comfy, gguf_pack):
    """The refusal vector (both sources), UCE and the spectrum on quantized Wan and SD1.x models: the text-side
    edits equal the fp16 model's within the format's resolution; the others run and patch."""
    refusal = pack_module("comfy_glue.refusal")
    uce = pack_module("comfy_glue.uce")
    spectrum = pack_module("comfy_glue.spectrum_chart")
    pairs = "a painting by Van Gogh | a painting"
    for family in FAMILIES:
        model, patched, *_ = erased(family, fmt)
        full = erased(family, "fp16")[0]
        tolerance = 2 * resolution(family, fmt, checkpoints, erased) + 1e-5
        for edit in (lambda m: refusal.erase_with_refusal(m, clips[family], pairs)[0],
                     lambda m: uce.erase_concepts_uce(m, clips[family], FORGET, RETAIN)[0]):
            edits, reference = patch_products(edit(model)), patch_products(edit(full))
            assert edits.keys() == reference.keys() and edits
            for key in edits:
                assert relative(edits[key], reference[key]) <= tolerance, key
        denoiser = refusal.erase_with_refusal(model, clips[family], pairs, source=refusal.SOURCES[1],
                                              denoiser_steps=2, denoiser_size=8)[0]
        assert denoiser.patches and all(torch.isfinite(p).all() for p in patch_products(denoiser).values())
        # its bias changes (the removed part set to the safe prompts' mean) reach what the layers compute, within
        # one step of the dtype the loaded model keeps the bias in (ComfyUI loads a scaled fp8 file's biases as
        # fp8 too, and rounds a patched one stochastically)
        changes = {k: p.flatten() for k, p in patch_products(denoiser).items() if k.endswith(".bias")}
        assert changes
        moved, before = computed_biases(comfy, denoiser, changes), computed_biases(comfy, model, changes)
        for key, change in changes.items():
            kept = torch.finfo(comfy.utils.get_attr(model.model, key).dtype)
            target = before[key] + change
            step = kept.eps * target.abs() + kept.eps * kept.smallest_normal
            assert ((moved[key] - target).abs() <= step * 1.01 + 1e-6).all(), key
        image = spectrum.spectrum_image(patched)
        assert image.ndim == 4 and image.shape[-1] == 3
        assert model.patches == {}


@pytest.mark.parametrize("fmt", ["scaled fp8", "fp8 e4m3fn weight_dtype"])
def test_a_baked_fp8_erasure_reloads_as_the_patched_model(fmt, erased, comfy, tmp_path, monkeypatch):
    """Stock ModelSave writes the erased weights in the model's own fp8 format (scaled fp8 keeps its scales),
    and the stock loader reads back a model that computes exactly like the patched one."""
    import folder_paths
    from comfy_extras.nodes_model_merging import ModelSave
    from safetensors import safe_open
    _, patched, _, _, used = erased("SD1.x loadable", fmt)
    node = ModelSave()
    node.output_dir = str(tmp_path)
    node.save(patched, "diffusion_models/baked")
    [written] = (tmp_path / "diffusion_models").glob("baked_*.safetensors")
    with safe_open(str(written), "pt") as handle:
        stored = {k: handle.get_tensor(k).dtype for k in handle.keys() if k.endswith("attn2.to_k.weight")}
        scales = [k for k in handle.keys() if k.endswith("scale_weight")]
    assert stored and all(dtype == torch.float8_e4m3fn for dtype in stored.values())
    assert bool(scales) == (fmt == "scaled fp8")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(tmp_path / "diffusion_models")], {".safetensors"}))
    reloaded = comfy.nodes.UNETLoader().load_unet(written.name, "fp8_e4m3fn" if "weight_dtype" in fmt else "default")[0]
    got = computed_weights(comfy, reloaded, sorted(used))
    for key, weight in used.items():
        assert torch.equal(got[key], weight), key


@pytest.mark.parametrize("fmt", ["mixed precision", "GGUF Q8_0"])
def test_stock_model_save_cannot_write_these_formats_with_or_without_an_erasure(fmt, erased, tmp_path):
    """What the README says about baking them: ComfyUI 0.3.75's ModelSave fails on a mixed-precision model
    and on a ComfyUI-GGUF model whether or not it carries an erasure (save the erasure as a LoRA or an
    erasure file instead). If a ComfyUI update makes this pass, the README's table needs updating."""
    from comfy_extras.nodes_model_merging import ModelSave
    model, patched, *_ = erased("SD1.x loadable", fmt)
    node = ModelSave()
    node.output_dir = str(tmp_path)
    errors = []
    for candidate in (model, patched):
        with pytest.raises(Exception) as caught:
            node.save(candidate, "diffusion_models/baked")
        errors.append(type(caught.value))
    assert errors[0] is errors[1]


@pytest.mark.parametrize("fmt", ["fp16", "scaled fp8", "GGUF Q8_0"])
def test_the_edit_is_the_same_while_the_model_is_loaded_partially(fmt, checkpoints, clips, comfy, gguf_pack, erase):
    """ComfyUI's low-VRAM path (a budget of one byte puts every layer on it: patches applied per call, weights
    left as stored; ComfyUI-GGUF's patcher always works that way) while another erasure's clone is loaded:
    the next erasure reads the same weights, the loaded clone keeps computing with its own patches, and the
    partially loaded model computes exactly what the fully loaded one does."""
    family = "SD1.x loadable"
    model = load(family, fmt, comfy, gguf_pack)
    first, _ = erase(model, clips[family], "Claude Monet")
    expected, _ = erase(first, clips[family], FORGET, RETAIN)
    keys = sorted(first.patches)
    first_full = computed_weights(comfy, first, keys)
    with torch.no_grad():
        first.load(torch.device("cpu"), lowvram_model_memory=1)
        try:
            layer = comfy.utils.get_attr(first.model, keys[0].removesuffix(".weight"))
            # ComfyUI's layers get a per-call patch; ComfyUI-GGUF's patcher attaches patches to the tensor either way
            assert layer.weight_function or "GGUF" in fmt, "the layer is not on the low-VRAM path"
            got, _ = erase(first, clips[family], FORGET, RETAIN)
            for key, weight in layer_functions(comfy, first, keys).items():
                assert relative(weight, first_full[key]) <= 1e-5, key
        finally:
            first.unpatch_model()
    reference, edits = patch_products(expected, FORGET), patch_products(got, FORGET)
    assert reference and edits.keys() == reference.keys()
    for key, product in edits.items():
        assert torch.allclose(product, reference[key], rtol=0, atol=1e-6), key
    full = computed_weights(comfy, got, keys)
    with torch.no_grad():
        got.load(torch.device("cpu"), lowvram_model_memory=1)
        try:
            for key, weight in layer_functions(comfy, got, keys).items():
                assert relative(weight, full[key]) <= 1e-5, key
        finally:
            got.unpatch_model()


def computed_biases(comfy, model, keys) -> dict[str, torch.Tensor]:
    """What each layer of the bias ``keys`` adds to its output, loaded the way sampling loads the model:
    ``layer(0)`` (without gradients, as ComfyUI runs a graph)."""
    with torch.no_grad():
        comfy.mm.load_models_gpu([model], force_full_load=True)
        biases = {}
        for key in keys:
            layer = comfy.utils.get_attr(model.model, key.removesuffix(".bias"))
            biases[key] = layer(torch.zeros(1, layer.in_features)).float()[0].clone()
        comfy.mm.unload_all_models()
    return biases


def layer_functions(comfy, model, keys) -> dict[str, torch.Tensor]:
    """What each layer computes with as the model is loaded now (:func:`computed_weights` without loading)."""
    weights = {}
    for key in keys:
        layer = comfy.utils.get_attr(model.model, key.removesuffix(".weight"))
        inputs = torch.cat([torch.zeros(1, layer.in_features), torch.eye(layer.in_features)])
        outputs = layer(inputs).float()
        weights[key] = (outputs[1:] - outputs[:1]).T.clone()
    return weights


@pytest.mark.parametrize("fmt", ["scaled fp8", "GGUF Q4_K"])
def test_combined_files_on_a_quantized_model_equal_one_erasure_of_both_lists(fmt, erased, clips, erase):
    files = pack_module("comfy_glue.erasure_files")
    family = "SD1.x loadable"
    model = erased(family, fmt)[0]
    clip = clips[family]
    saved = [(name, files.erasure_file_of(erase(model, clip, name)[0])) for name in ("Van Gogh", "Starry Night")]
    combined, _ = files.combine_erasure_files(model, saved)
    both, _ = erase(model, clip, "Van Gogh\nStarry Night")
    expected, edits = patch_products(both), patch_products(combined)
    assert edits.keys() == expected.keys()
    for key, product in edits.items():
        assert relative(product, expected[key]) <= 1e-5, key


# ---- the fine-tune (Unlearn Concept) on quantized checkpoints -----------------------------------------------------

FINETUNE = dict(iterations=12, learning_rate=1e-2, latent_size=8, eta=2.0, seed=3)
FINETUNED = ("fp16", "scaled fp8", "fp8 e4m3fn weight_dtype", "mixed precision")


def gradient_state(model) -> dict[str, tuple[bool, bool]]:
    """Per parameter of the loaded model: ``(requires_grad, has a gradient)``."""
    return {name: (p.requires_grad, p.grad is not None) for name, p in model.model.named_parameters()}


@pytest.fixture(scope="module")
def unlearned(checkpoints, clips, comfy, gguf_pack):
    """Per (family, format): the loaded model, its gradient state before the fine-tune, and the fine-tuned clone."""
    unlearning = pack_module("comfy_glue.unlearning")
    cache = {}

    def get(family, fmt):
        if (family, fmt) not in cache:
            model = load(family, fmt, comfy, gguf_pack)
            before = gradient_state(model)
            patched, _, _ = unlearning.unlearn_concept(model, clips[family], "Van Gogh", **FINETUNE)
            cache[family, fmt] = (model, before, patched)
        return cache[family, fmt]
    return get


@pytest.mark.parametrize("family, fmt", [(family, fmt) for family in FAMILIES for fmt in FINETUNED[1:]]
                         + [("Wan 2.1 loadable", "GGUF Q4_K")])
def test_the_finetune_learns_on_fp8_checkpoints_what_it_learns_on_fp16(family, fmt, unlearned):
    """The LoRA's factors are the change the layer computes with, in every format (a scaled-fp8 layer's wrappers see
    the unscaled weight: the change is divided by the scale there), so the same seed learns about the same change
    on the fp8 copy as on the fp16 file: the formats differ by 3 % in the weights, a missed scale would make the
    change hundreds of times too small or large. The tiny Wan's GGUF file holds its attention layers unquantized
    (too narrow for Q4_K's blocks), so it trains there too. The model that was fine-tuned keeps no gradient and
    its flags."""
    model, before, patched = unlearned(family, fmt)
    reference = patch_products(unlearned(family, "fp16")[2])
    changes = patch_products(patched)
    assert changes.keys() == reference.keys() and changes
    learned = torch.cat([changes[k].flatten() for k in sorted(changes)])
    expected = torch.cat([reference[k].flatten() for k in sorted(reference)])
    assert float(expected.norm()) > 0
    cosine = float(learned @ expected / (learned.norm() * expected.norm()))
    assert 0.5 < float(learned.norm() / expected.norm()) < 2 and cosine > 0.5
    assert model.patches == {} and gradient_state(model) == before


def test_the_fp16_finetune_leaves_no_gradient_on_the_input_model(unlearned):
    for family in FAMILIES:
        model, before, _ = unlearned(family, "fp16")
        assert model.patches == {} and gradient_state(model) == before
        assert not any(has_grad for _, has_grad in before.values())


def test_wrapper_gain_is_what_each_kind_of_layer_applies(comfy, gguf_pack, checkpoints):
    """1 for an fp16 layer, the weight scale for a scaled-fp8 one, 0 for ComfyUI-GGUF's quantized layers (which
    ignore weight wrappers)."""
    unlearning = pack_module("comfy_glue.unlearning")
    family = "SD1.x loadable"
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k"
    layers = {fmt: comfy.utils.get_attr(load(family, fmt, comfy, gguf_pack).model, key)
              for fmt in ("fp16", "scaled fp8", "GGUF Q4_K")}
    assert unlearning.wrapper_gain(layers["fp16"]) == pytest.approx(1.0, rel=1e-4)
    scale = float(layers["scaled fp8"].scale_weight)
    assert scale != pytest.approx(1.0, rel=0.1)
    assert unlearning.wrapper_gain(layers["scaled fp8"]) == pytest.approx(scale, rel=1e-3)
    assert unlearning.wrapper_gain(layers["GGUF Q4_K"]) == pytest.approx(0.0, abs=1e-6)
    assert all(layer.weight_function == [] for layer in layers.values())


def test_the_finetune_on_a_gguf_model_is_refused_with_the_way_round(clips, comfy, gguf_pack, checkpoints):
    """ComfyUI-GGUF's quantized layers never call weight wrappers, so a LoRA trained through them would stay zero:
    refused before any sampling, the model untouched (the tiny SD1.x's attention layers are Q4_K-quantized:
    :func:`test_wrapper_gain_is_what_each_kind_of_layer_applies`)."""
    family = "SD1.x loadable"
    unlearning = pack_module("comfy_glue.unlearning")
    model = load(family, "GGUF Q4_K", comfy, gguf_pack)
    before = gradient_state(model)
    with pytest.raises(ValueError, match="GGUF.*Save Erasure as LoRA"):
        unlearning.unlearn_concept(model, clips[family], "Van Gogh", **FINETUNE)
    assert model.patches == {} and gradient_state(model) == before
