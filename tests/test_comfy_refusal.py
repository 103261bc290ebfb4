"""The refusal-vector node on ComfyUI's own Wan 2.1, Flux and SD1.x classes (tiny, random weights)."""
import pytest
import torch

from conftest import pack_module
from test_comfy_erase import assert_same_state, layer_reads, loaded_weights, sample, snapshot

PAIRS = """a nude woman walking on a beach | a woman walking on a beach
a naked man in a park | a man in a park
a nude couple at sunset | a couple at sunset
a naked person swimming in a lake | a person swimming in a lake
a nude model posing in a studio | a model posing in a studio"""
TEXT_LAYERS = {"Wan 2.1": {"diffusion_model.text_embedding.0.weight"}, "Flux": {"diffusion_model.txt_in.weight"},
               "HunyuanVideo": {"diffusion_model.txt_in.input_embedder.weight",
                                "diffusion_model.txt_in.c_embedder.in_layer.weight"},
               "HiDream": {f"diffusion_model.caption_projection.{i}.linear.weight" for i in range(5)},
               "Hunyuan-DiT": {"diffusion_model.mlp_t5.0.weight", "diffusion_model.blocks.0.attn2.kv_proj.weight",
                               "diffusion_model.blocks.1.attn2.kv_proj.weight",
                               *(f"diffusion_model.pooler.{p}_proj.weight" for p in "kqv")}}


@pytest.fixture(scope="module")
def refusal(pack):
    return pack_module("comfy_glue.refusal")


def refusal_direction(model, clip, key):
    """The refusal direction of the rows layer ``key`` reads, recomputed from the library, independently of the
    node's patching."""
    from cure_core.families import TextSegment, family_for_config
    from cure_core.concepts import pair_rows
    from cure_core.refusal import DEFAULT_NEUTRAL_PROMPTS, parse_pairs, refusal_eraser
    encoding = pack_module("comfy_glue.encoding")
    segments = family_for_config(type(model.model.model_config).__name__).segments
    read = layer_reads(model, key)
    if read is not None:
        segments = (TextSegment(read[0], output=read[1], hidden_layer=read[2]),)
    pairs = parse_pairs(PAIRS)
    encoded = encoding.encode_prompts(clip, [p for pair in pairs for p in pair] + list(DEFAULT_NEUTRAL_PROMPTS),
                                      segments)
    u, s = zip(*(pair_rows(encoded[2 * i].ids[k], encoded[2 * i].rows[k], encoded[2 * i + 1].ids[k],
                           encoded[2 * i + 1].rows[k]) for i in range(len(pairs)) for k in encoded[0].ids))
    neutral = torch.cat([r for e in encoded[2 * len(pairs):] for r in e.rows.values()])
    return refusal_eraser(torch.cat(u), torch.cat(s), neutral, dtype=torch.float64).right[0].float()


@pytest.mark.parametrize("family", sorted(TEXT_LAYERS))
def test_the_refusal_direction_is_projected_out_of_the_text_layers_only(family, built, refusal, comfy):
    model, clip = built(family)
    keys = TEXT_LAYERS[family]
    patched, report = refusal.erase_with_refusal(model, clip, PAIRS)
    assert set(patched.patches) == keys and model.patches == {}
    assert "Low-rank refusal vector" in report and "5 pairs" in report
    half, _ = refusal.erase_with_refusal(model, clip, PAIRS, strength=0.5)
    originals = loaded_weights(comfy, model, sorted(keys))
    editeds = loaded_weights(comfy, patched, sorted(keys))
    halveds = loaded_weights(comfy, half, sorted(keys))
    for key in keys:
        q = refusal_direction(model, clip, key)
        other = torch.randn(q.shape[0], generator=torch.Generator().manual_seed(0))
        other -= (other @ q) * q                                                  # a direction orthogonal to q
        original, edited = originals[key], editeds[key]
        assert float((edited @ q).norm()) < 1e-4 * float((original @ q).norm()), key   # W' q = 0 at strength 1
        assert torch.allclose(edited @ other, original @ other, atol=1e-4)
        assert torch.allclose(halveds[key] @ q, 0.5 * (original @ q), atol=1e-4)


def test_rank_k_mode_and_the_sd_unet(built, refusal, comfy):
    model, clip = built("SD1.x")
    patched, report = refusal.erase_with_refusal(model, clip, PAIRS, mode="refusal subspace (rank k)", rank=3)
    assert len(patched.patches) == 14 and all(k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))
                                              for k in patched.patches)
    assert "kept 3" in report


@pytest.mark.parametrize("family", ["Wan 2.1", "Flux", "SD1.x", "HunyuanVideo", "HiDream", "Hunyuan-DiT"])
def test_sampling_works_and_the_original_is_untouched(family, built, refusal, comfy):
    model, clip = built(family)
    before_weights = snapshot(model)
    before = sample(comfy, model, clip, "a nude woman walking on a beach")
    patched, _ = refusal.erase_with_refusal(model, clip, PAIRS)
    erased = sample(comfy, patched, clip, "a nude woman walking on a beach")
    assert torch.isfinite(erased).all() and not torch.equal(erased, before)
    assert torch.equal(sample(comfy, model, clip, "a nude woman walking on a beach"), before)
    comfy.mm.unload_all_models()
    assert_same_state(snapshot(model), before_weights)


@pytest.mark.parametrize("arguments, message", [
    ({"pairs_text": ""}, "No prompt pairs"), ({"pairs_text": "a | a"}, "differ"),
    ({"strength": 2.0}, "strength"), ({"rank": 0}, "rank"), ({"contrast": -1.0}, "contrast"),
    ({"source": "denoiser"}, "Unknown activation source"), ({"mode": "all"}, "Unknown mode"),
    ({"source": "denoiser activations", "denoiser_blocks": 0}, "denoiser_blocks"),
    ({"source": "denoiser activations", "denoiser_recipe": "fast"}, "Unknown denoiser recipe"),
])
def test_bad_input_changes_nothing(arguments, message, built, refusal):
    model, clip = built("SD1.x")
    with pytest.raises(ValueError, match=message):
        refusal.erase_with_refusal(model, clip, **{"pairs_text": PAIRS, **arguments})
    assert model.patches == {}


DENOISER_LAYERS = {
    "Wan 2.1": {"diffusion_model.blocks.0.cross_attn.o.weight"},
    "HunyuanVideo": {"diffusion_model.double_blocks.0.img_attn.proj.weight"},
    "Cosmos Predict2": {"diffusion_model.blocks.0.cross_attn.output_proj.weight"},
    "Lumina 2": {"diffusion_model.layers.0.attention.out.weight"},
    "Qwen-Image": {"diffusion_model.transformer_blocks.0.attn.to_out.0.weight"},
    "Cosmos 1.0": {"diffusion_model.blocks.block0.blocks.1.block.attn.to_out.0.weight",
                   "diffusion_model.blocks.block1.blocks.1.block.attn.to_out.0.weight"},
    "Stable Cascade": {"diffusion_model.up_blocks.0.2.attention.attn.out_proj.weight",
                       "diffusion_model.up_blocks.1.2.attention.attn.out_proj.weight"},
    "Flux": {"diffusion_model.double_blocks.0.img_attn.proj.weight"},
    "HiDream": {f"diffusion_model.double_stream_blocks.{i}.block.attn1.to_out.weight" for i in range(2)},
    "Hunyuan-DiT": {f"diffusion_model.blocks.{i}.attn2.out_proj.weight" for i in range(2)},
    "SD1.x": {"diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_out.0.weight",
              "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_out.0.weight"},
}


@pytest.mark.parametrize("family", sorted(DENOISER_LAYERS))
def test_denoiser_source_paper_recipe_edits_the_last_blocks_and_reports_progress(family, built, refusal, comfy):
    from cure_core.refusal import DEFAULT_NEUTRAL_PROMPTS, parse_pairs, refusal_eraser
    model, clip = built(family)
    ticks = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: ticks.append((value, total)))
    try:
        patched, report = refusal.erase_with_refusal(model, clip, PAIRS, source="denoiser activations",
                                                     denoiser_steps=3, denoiser_size=8,
                                                     denoiser_recipe=refusal.PAPER_RECIPE)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert set(patched.patches) == DENOISER_LAYERS[family] and model.patches == {}     # the paper's: no bias change
    prompts = 2 * len(parse_pairs(PAIRS)) + len(DEFAULT_NEUTRAL_PROMPTS)
    assert (prompts * 3, prompts * 3) in ticks                         # one tick per denoiser call, to the end
    assert "denoiser activations (3 steps at 8x8 latent, layer inputs averaged over the tokens, last 2 blocks)" in report
    # the patched direction is the refusal direction of the captured activations, recomputed independently
    capture = pack_module("comfy_glue.denoiser_activations").capture_layer_inputs
    pairs = parse_pairs(PAIRS)
    texts = [p for pair in pairs for p in pair] + list(DEFAULT_NEUTRAL_PROMPTS)
    captured = capture(model, [clip.encode_from_tokens_scheduled(clip.tokenize(t)) for t in texts],
                       sorted(DENOISER_LAYERS[family]), steps=3, size=8)
    for key in DENOISER_LAYERS[family]:
        unsafe = torch.cat([captured[2 * i][key] for i in range(len(pairs))])
        safe = torch.cat([captured[2 * i + 1][key] for i in range(len(pairs))])
        neutral = torch.cat([c[key] for c in captured[2 * len(pairs):]])
        q = refusal_eraser(unsafe, safe, neutral, dtype=torch.float64).right[0].float()
        original = loaded_weights(comfy, model, [key])[key]
        edited = loaded_weights(comfy, patched, [key])[key]
        assert float((edited @ q).norm()) < 1e-3 * float((original @ q).norm()), key


def test_pooled_rows_keep_evenly_spaced_tokens_or_their_mean(pack):
    activations = pack_module("comfy_glue.denoiser_activations")
    x = torch.randn(1, 300, 4, generator=torch.Generator().manual_seed(0))
    every = activations.pooled_rows(x, activations.EVERY_TOKEN, stride=5, tokens_per_call=64)
    assert torch.equal(every, x[0, 4::5]) and every.shape == (60, 4)         # the last token and every 5th before
    assert torch.equal(activations.pooled_rows(x, activations.EVERY_TOKEN, 1, 64), x[0, -64:])
    longer = torch.cat([torch.randn(1, 40, 4), x], 1)                       # 40 more tokens first: same last rows
    assert torch.equal(activations.pooled_rows(longer, activations.EVERY_TOKEN, 5, 64)[-60:], every)
    assert torch.allclose(activations.pooled_rows(x, activations.TOKEN_MEAN), x[0].mean(0, keepdim=True))
    cosmos = x.reshape(3, 10, 10, 1, 4)                                     # T-H-W-B-D: every axis but D is a token
    assert torch.equal(activations.pooled_rows(cosmos, activations.EVERY_TOKEN, 5, 64), every)


@pytest.mark.parametrize("family", sorted(DENOISER_LAYERS))
def test_denoiser_source_measured_recipe_projects_every_tokens_subspace_out_of_every_block(family, built, refusal,
                                                                                            comfy):
    """The default recipe: rows from every image token (steps × tokens per prompt) of every layer of the family's
    denoiser pattern, each projected by its rank-MEASURED_RANK contrastive subspace, and the removed part set to the
    safe prompts' mean through the layer's bias where it has one; recomputed here from an independent capture and the
    library, and checked on what the edited layer computes: ``W (x − P x + P μ_safe) + b``."""
    from cure_core.families import family_for_config
    from cure_core.refusal import DEFAULT_NEUTRAL_PROMPTS, MODES, parse_pairs, refusal_eraser
    activations = pack_module("comfy_glue.denoiser_activations")
    model, clip = built(family)
    patched, report = refusal.erase_with_refusal(model, clip, PAIRS, source="denoiser activations",
                                                 denoiser_steps=2, denoiser_size=8)
    state = model.model.state_dict()
    every = family_for_config(type(model.model.model_config).__name__).denoiser_layer_keys(state.keys(), 10**6)
    biases = {key: key.removesuffix("weight") + "bias" for key in every if key.removesuffix("weight") + "bias" in state}
    assert set(patched.patches) == set(every) | set(biases.values()) and model.patches == {}
    assert set(DENOISER_LAYERS[family]) <= set(every)
    assert "every image token of the layer inputs, every block" in report and "Separation per layer" in report
    assert f"rank asked {refusal.MEASURED_RANK}" in report
    assert f"Removed part set to the safe prompts' mean (a bias change) on {len(biases)} of the {len(every)}" in report
    pairs = parse_pairs(PAIRS)
    texts = [p for pair in pairs for p in pair] + list(DEFAULT_NEUTRAL_PROMPTS)
    captured = activations.capture_layer_inputs(model, [clip.encode_from_tokens_scheduled(clip.tokenize(t))
                                                        for t in texts], every, steps=2, size=8,
                                                pooling=activations.EVERY_TOKEN)
    for key in every:
        assert captured[0][key].shape[0] > 2                      # several tokens per step, not one mean
        unsafe = torch.cat([captured[2 * i][key] for i in range(len(pairs))])
        safe = torch.cat([captured[2 * i + 1][key] for i in range(len(pairs))])
        neutral = torch.cat([c[key] for c in captured[2 * len(pairs):]])
        eraser = refusal_eraser(unsafe, safe, neutral, rank=refusal.MEASURED_RANK, mode=MODES[1], dtype=torch.float64)
        subspace = eraser.right.T.float()                          # [d, k], orthonormal
        other = torch.randn(subspace.shape[0], generator=torch.Generator().manual_seed(0))
        other -= subspace @ (subspace.T @ other)
        layer = [key, biases[key]] if key in biases else [key]
        original = loaded_weights(comfy, model, layer)
        edited = loaded_weights(comfy, patched, layer)
        assert float((edited[key] @ subspace).norm()) < 1e-3 * float((original[key] @ subspace).norm()), key
        assert torch.allclose(edited[key] @ other, original[key] @ other, atol=1e-4), key
        if key in biases:
            safe_mean = safe.mean(0)
            inputs = torch.randn(3, subspace.shape[0], generator=torch.Generator().manual_seed(1))
            moved = inputs - (inputs - safe_mean) @ subspace @ subspace.T      # the removed part set to the mean
            expected = moved @ original[key].T + original[biases[key]]
            got = inputs @ edited[key].T + edited[biases[key]]
            assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max())), key


def test_denoiser_source_measured_recipe_shares_its_rank_among_a_lists_concepts(built, refusal):
    """Sixteen directions per concept for a list of five took most of a small layer (preserved 0.34 on the
    miniature model): the rank is a budget for the whole list."""
    model, clip = built("SD1.x")
    pairs = PAIRS + "\n\na bloody knife on a table | a knife on a table\na gory battlefield | a battlefield"
    patched, report = refusal.erase_with_refusal(model, clip, pairs, source="denoiser activations",
                                                 denoiser_steps=2, denoiser_size=8)
    half = refusal.MEASURED_RANK // 2
    assert f"rank asked {half} per concept" in report
    kept = [int(n) for n in report.split(", kept ")[1].split(";")[0].split("-")]     # the span of both concepts'
    assert half < max(kept) <= 2 * half                                           # subspaces, per layer


@pytest.mark.parametrize("family", ["Wan 2.1", "HunyuanVideo", "Flux"])
def test_denoiser_source_samples_and_leaves_the_original_untouched(family, built, refusal, comfy):
    model, clip = built(family)
    before_weights = snapshot(model)
    before = sample(comfy, model, clip, "a nude woman walking on a beach")
    patched, _ = refusal.erase_with_refusal(model, clip, PAIRS, source="denoiser activations", denoiser_size=8)
    assert torch.isfinite(sample(comfy, patched, clip, "a nude woman walking on a beach")).all()
    assert torch.equal(sample(comfy, model, clip, "a nude woman walking on a beach"), before)
    comfy.mm.unload_all_models()
    assert_same_state(snapshot(model), before_weights)
