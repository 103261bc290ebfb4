"""Benchmark of the Erase Concepts (CURE) node on real-size layers with random weights.

Prints, per family (SD1.5, SDXL, SD3.5 Large, Flux.1-dev, Wan 2.1 14B) and device:
  * encode  - 16 concept prompts through the real-size text encoders (random weights); on a CPU the
              4.7 B-parameter T5-XXL of SD3/Flux (5.7 B umT5 of Wan) does not fit, so random token rows
              stand in (Wan's umT5 tokenizer does not ship with ComfyUI: a small one is trained on the fly)
  * edit    - the edit itself: projector factors + per-layer patch factors (encoding excluded); also for
              lists of 20 and 100 concepts of random rows, and those lists through the node's own steps
              after encoding (compaction, edit, the report's figures, patched clone; not for the T5 families)
  * patch   - clone + add_patches on the ComfyUI MODEL
  * refusal - the refusal-vector edit from text embeddings (cPCA + factors; encoding excluded), and
              from denoiser activations (* random activations of the captured size, the node's measured
              recipe: every block, 5 pairs x 4 steps x 64 image tokens = 1280 paired rows and 12 neutral
              prompts x 4 x 64 = 3072 rows per layer, rank 16, random draws included; capturing them
              needs the full denoiser)
  * node    - the whole node (encode + edit + patch), as a sampler graph runs it; and in its robust mode
  * memory  - what the patches hold (unique tensors)
  * step    - one denoiser evaluation with and without the patch, once loaded (needs --sampling;
              a real-size UNet is built, which takes a few GB of memory)

    .venv/bin/python benchmarks/bench_erase.py [--device cuda] [--families sd15,sdxl,sd3,flux,wan14b] [--sampling]
Targets on an H100: edit < 5 ms (SD1.5), < 10 ms (SDXL); node with 16 prompts < 50 ms; no step overhead.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.comfy_env import load_pack, pack_module  # noqa: E402

# ComfyUI 0.3.75's detected UNet configs for these checkpoints (comfy/model_detection.py).
UNET_CONFIGS = {
    "sd15": {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False},
    "sdxl": {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False},
    "sd3": {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 38, "input_size": None,
            "adm_in_channels": 2048, "pos_embed_scaling_factor": None, "pos_embed_max_size": 192,
            "num_patches": 36864, "qk_norm": "rms", "x_block_self_attn_layers": [],
            "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 2432}}},
    "flux": {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
             "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
             "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True},
    "wan14b": {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512, "in_dim": 16,
               "dim": 5120, "ffn_dim": 13824, "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 40,
               "num_layers": 40, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6},
}
T5_FAMILIES = ("sd3", "flux", "wan14b")
FORGET, RETAIN = "Van Gogh\nStarry Night", "Claude Monet\nwatercolor"   # 4 concepts x 4 templates = 16 prompts
ROBUST_CONTEXTS = 12      # the robust mode as the benchmark runs it (2 x 12 more templates per forget concept)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 1):
    """Median and spread of ``repeats`` runs after ``warmup`` runs, in milliseconds, and the last result."""
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), (min(times), max(times)), result


def build_model(family: str, device: torch.device, dtype: torch.dtype, full: bool):
    """A ComfyUI MODEL of the real architecture. Only the text-reading layers hold real (random) weights
    unless ``full``; the rest stays on the meta device, which costs no memory."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.utils
    tiny = pack_module("testbed.tiny_models")
    families = pack_module("cure_core.families")
    config = comfy.model_detection.model_config_from_unet_config(dict(UNET_CONFIGS[family]))
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device if full else "meta")
    if full:
        tiny.randomize(model.diffusion_model, seed=0)
    else:
        family_spec = families.family_for_config(type(config).__name__)
        keys = (family_spec.text_layer_keys(model.state_dict().keys())
                + family_spec.denoiser_layer_keys(model.state_dict().keys(), len(model.state_dict())))
        generator = torch.Generator().manual_seed(0)
        for key in keys:
            shape = comfy.utils.get_attr(model, key).shape
            weight = (torch.randn(shape, generator=generator) / shape[1] ** 0.5).to(device, dtype)
            comfy.utils.set_attr_param(model, key, weight)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def build_clip(family: str, device: torch.device, dtype: torch.dtype):
    """The family's real-size text encoders (CLIP-L; + bigG for SDXL/SD3; + T5-XXL for SD3/Flux), random weights."""
    import comfy.model_detection
    import comfy.sd
    tiny = pack_module("testbed.tiny_models")
    config = comfy.model_detection.model_config_from_unet_config(dict(UNET_CONFIGS[family]))
    if family == "sd3":
        import comfy.supported_models_base
        import comfy.text_encoders.sd3_clip as sd3_clip
        target = comfy.supported_models_base.ClipTarget(sd3_clip.SD3Tokenizer, sd3_clip.sd3_clip(True, True, True))
    else:
        target = config.clip_target()
    tokenizer_data = {"spiece_model": tiny.tiny_spiece_model()} if family == "wan14b" else {}
    clip = comfy.sd.CLIP(target=target, tokenizer_data=tokenizer_data,
                         model_options={"dtype": dtype, "load_device": device, "offload_device": device,
                                        "initial_device": device})
    tiny.randomize(clip.cond_stage_model, seed=1)
    return clip


def unique_bytes(model) -> int:
    seen = {}
    for patch_list in model.patches.values():
        for patch in patch_list:
            for tensor in patch[1].weights[:2]:
                seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def bench_family(family: str, device: torch.device, dtype: torch.dtype, repeats: int, sampling: bool,
                 selection: str) -> None:
    erase_cure = pack_module("comfy_glue.cure")
    encoding = pack_module("comfy_glue.encoding")
    patching = pack_module("comfy_glue.patching")
    concepts = pack_module("cure_core.concepts")
    spectral = pack_module("cure_core.spectral")
    edit = pack_module("cure_core.edit")

    started = time.perf_counter()
    model = build_model(family, device, dtype, full=False)
    encode_for_real = device.type == "cuda" or family not in T5_FAMILIES
    clip = build_clip(family, device, dtype) if encode_for_real else None
    print(f"\n== {family.upper()} on {device} ({dtype}), built in {time.perf_counter() - started:.1f} s; rows: {selection}")

    templates = concepts.TEMPLATES["style"]
    forget_prompts = concepts.expand(concepts.parse_concepts(FORGET), templates)
    retain_prompts = concepts.expand(concepts.parse_concepts(RETAIN), templates)
    family_spec = pack_module("comfy_glue.family").detect_family(model)
    keys = family_spec.text_layer_keys(model.model.state_dict().keys())
    weights = {key: patching.effective_weight(model, key) for key in keys}
    params = sum(w.numel() for w in weights.values())
    print(f"   {len(keys)} edited matrices ({params / 1e6:.1f} M weights), "
          f"{len(forget_prompts) + len(retain_prompts)} prompts encoded")

    def encode():
        forget, retain = encoding.encode_concept_sets(clip, [forget_prompts, retain_prompts], selection,
                                                      family_spec.segments)
        return forget.rows, retain.rows

    if encode_for_real:
        t_encode, spread_encode, (forget_rows, retain_rows) = timed(encode, device, repeats)
    else:   # as many rows as the real encoders give these prompts (SD3: CLIP + T5 rows), random values
        generator = torch.Generator().manual_seed(0)
        # as many as the same tokenizers give with the family's tiny encoders (which rows a selection keeps
        # depends on the tokens and on the encoder being causal or not, not on its width)
        tiny = pack_module("testbed.tiny_models")
        small_clip = tiny.tiny_clip({"sd3": "SD3", "flux": "Flux", "wan14b": "Wan 2.1"}[family])
        n_rows = encoding.encode_concept_sets(small_clip, [forget_prompts], selection, family_spec.segments)[0].rows.shape[0]
        width = weights[keys[0]].shape[1]
        forget_rows, retain_rows = (torch.randn(n_rows, width, generator=generator) for _ in range(2))
    forget_rows, retain_rows = forget_rows.to(device), retain_rows.to(device)

    # The node's default: a spectrum per concept (two forget and two retain concepts, rows split evenly).
    forget_counts = (forget_rows.shape[0] // 2, forget_rows.shape[0] - forget_rows.shape[0] // 2)
    retain_counts = (retain_rows.shape[0] // 2, retain_rows.shape[0] - retain_rows.shape[0] // 2)

    def build_edit():
        eraser = spectral.concept_set_eraser(forget_rows, forget_counts, retain_rows, retain_counts, 2.0, 2.0)
        return [eraser.weight_update(w) for w in weights.values()]

    t_edit, spread_edit, _ = timed(build_edit, device, repeats)

    # Lists: 20 and 100 concepts of random rows of the real width, as many rows each as one concept above.
    list_times = {}
    for count in (20, 100):
        g_list = torch.Generator().manual_seed(count)
        many = torch.randn(count * forget_counts[0], forget_rows.shape[1], generator=g_list).to(device)

        def build_list_edit():
            eraser = spectral.concept_set_eraser(many, (forget_counts[0],) * count, None, (), 2.0, 2.0)
            return [eraser.weight_update(w) for w in weights.values()]

        list_times[count] = timed(build_list_edit, device, max(1, repeats // 2))[:2]

    # The same lists through the node's own steps after encoding (each concept's rows compacted to its spectral
    # factor, the edit, the report's figures, the patched clone): what a user waits for once the CLIP has run.
    if encode_for_real:
        recipe = patching.erasures_on(erase_cure.erase_concepts(model, clip, FORGET, RETAIN)[0])[0].record.recipe
        erasure_file = pack_module("cure_core.erasure_file")
        node_times = {}
        for count in (20, 100):
            g_list = torch.Generator().manual_seed(count)
            many = torch.randn(count * forget_counts[0], forget_rows.shape[1], generator=g_list).to(device)
            concept_set = erasure_file.ConceptRows(tuple(f"concept {i}" for i in range(count)),
                                                   (forget_counts[0],) * count, many)

            def node_after_encoding():
                rows = {"forget": erase_cure.compact_rows(model, family_spec, "forget", concept_set, 2.0)}
                return erase_cure.erase_rows(model, family_spec, keys, rows, recipe)

            node_times[count] = timed(node_after_encoding, device, max(1, repeats // 2))[:2]

    # The refusal vector's edit from text embeddings: 5 pairs (86 paired rows, as Wan's encoder gives them)
    # and 12 neutral prompts (280 rows); random rows of the layer's width, encoding excluded.
    refusal = pack_module("cure_core.refusal")
    g = torch.Generator().manual_seed(1)
    width = next(iter(weights.values())).shape[1]
    safe = torch.randn(86, width, generator=g).to(device)
    unsafe = safe + torch.randn(86, width, generator=g).to(device) * 0.3 + torch.randn(width, generator=g).to(device)
    neutral = torch.randn(280, width, generator=g).to(device)

    def build_refusal_edit():
        eraser = refusal.refusal_eraser(unsafe, safe, neutral, rank=100, contrast=1.0)
        return [eraser.weight_update(w) for w in weights.values()]

    t_refusal, spread_refusal, _ = timed(build_refusal_edit, device, repeats)

    # The refusal vector from denoiser activations, the node's measured recipe: every block's attention output
    # projection, 5 pairs and 12 neutral prompts x 4 steps x 64 image tokens, rank 16 (random rows here; capturing
    # them means running the full denoiser, which this benchmark does not build).
    state_keys = model.model.state_dict().keys()
    denoiser_weights = {k: patching.effective_weight(model, k)
                        for k in family_spec.denoiser_layer_keys(state_keys, len(state_keys))}

    def build_denoiser_edit():
        out = []
        for w in denoiser_weights.values():
            d = w.shape[1]
            safe_a = torch.randn(1280, d, generator=g).to(device)
            unsafe_a = (safe_a + torch.randn(1280, d, generator=g).to(device) * 0.3
                        + torch.randn(d, generator=g).to(device))
            eraser = refusal.refusal_eraser(unsafe_a, safe_a, torch.randn(3072, d, generator=g).to(device), rank=16,
                                            mode=refusal.MODES[1])
            out.append(eraser.weight_update(w))
        return out

    t_denoiser, spread_denoiser, _ = timed(build_denoiser_edit, device, repeats)

    edits = edit.edit_layers(weights, spectral.concept_set_eraser(forget_rows, forget_counts, retain_rows,
                                                                  retain_counts, 2.0, 2.0), forget_rows, retain_rows)
    t_patch, spread_patch, patched = timed(lambda: patching.patched_clone(model, edits, 1.0, {"method": "benchmark"}),
                                           device, repeats)

    def row(name, median, spread):
        print(f"   {name:<44} {median:9.2f} ms   (min {spread[0]:.2f}, max {spread[1]:.2f})")

    if encode_for_real:
        row("encode 16 prompts (text encoders, batched)", t_encode, spread_encode)
    else:
        print(f"   encode: skipped on the CPU (real-size T5-XXL does not fit); {len(forget_rows)} random rows "
              "per set stand in")
    row("edit: projector + patch factors", t_edit, spread_edit)
    for count, (median, spread) in list_times.items():
        row(f"edit, {count} concepts ({forget_counts[0]} random rows each)", median, spread)
    for count, (median, spread) in (node_times.items() if encode_for_real else ()):
        row(f"node after encoding, {count} concepts", median, spread)
    row("patch: clone + add_patches", t_patch, spread_patch)
    row("refusal vector edit (text source, k=100)", t_refusal, spread_refusal)
    row(f"refusal edit (denoiser source, {len(denoiser_weights)} layers)*", t_denoiser, spread_denoiser)
    if encode_for_real:
        t_node, spread_node, (patched, _) = timed(
            lambda: erase_cure.erase_concepts(model, clip, FORGET, RETAIN), device, repeats)
        row("whole node (encode + edit + measures + patch)", t_node, spread_node)
        print(f"   whole node / encoding: {t_node / t_encode:.3f} (issue 13's target: at most 1.15)")
        t_robust, spread_robust, _ = timed(
            lambda: erase_cure.erase_concepts(model, clip, FORGET, RETAIN, robust_contexts=ROBUST_CONTEXTS),
            device, repeats)
        row(f"whole node, robust mode ({ROBUST_CONTEXTS} contexts)", t_robust, spread_robust)
        print(f"   robust mode / plain node: {t_robust / t_node:.1f}x")
    dense = sum(w.numel() for w in weights.values()) * 4
    print(f"   patches hold {unique_bytes(patched) / 2**20:.2f} MiB (a dense fp32 diff would be "
          f"{dense / 2**20:.1f} MiB)")

    if sampling and family in ("sd15", "sdxl"):
        bench_step(family, device, dtype, repeats, model_factory=lambda: build_model(family, device, dtype, True))


def bench_step(family, device, dtype, repeats, model_factory) -> None:
    """One denoiser evaluation (a sampling step calls it once per CFG branch) with and without the patch."""
    import comfy.model_management as mm
    erase_cure = pack_module("comfy_glue.cure")
    model = model_factory()
    clip = build_clip(family, device, dtype)
    patched, _ = erase_cure.erase_concepts(model, clip, FORGET, RETAIN)
    context = torch.randn(2, 77, UNET_CONFIGS[family]["context_dim"], device=device, dtype=dtype)
    native = {"sd15": 64, "sdxl": 128}[family]                      # 512 px / 1024 px images
    latent = native if device.type == "cuda" else 32                # 256 px on a CPU
    x = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    t = torch.full((2,), 500.0, device=device)
    extra = {}
    if family == "sdxl":
        extra["y"] = torch.randn(2, UNET_CONFIGS[family]["adm_in_channels"], device=device, dtype=dtype)

    @torch.inference_mode()
    def evaluate(patcher):
        return patcher.model.diffusion_model(x, t, context=context, **extra)

    for name, patcher in (("original", model), ("erased", patched), ("original again", model)):
        mm.load_models_gpu([patcher], force_full_load=True)     # the patch is applied here, once
        median, spread, _ = timed(lambda: evaluate(patcher), device, repeats)
        print(f"   denoiser step, batch 2 at {latent}x{latent} latent, {name:<15} {median:9.1f} ms   "
              f"(min {spread[0]:.1f}, max {spread[1]:.1f})")
    mm.unload_all_models()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default="sd15,sdxl,sd3,flux,wan14b")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--token-selection", default=None,
                        help="the rows the eraser is built from (default: the node's default, the concept contribution)")
    parser.add_argument("--sampling", action="store_true",
                        help="also time SD1.5/SDXL denoiser steps (builds the full UNets)")
    args = parser.parse_args()
    device = torch.device(args.device)
    load_pack(cpu=device.type == "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}")
    selection = args.token_selection or pack_module("cure_core.concepts").TOKEN_SELECTIONS[0]
    for family in args.families.split(","):
        bench_family(family.strip(), device, dtype, args.repeats, args.sampling, selection)


if __name__ == "__main__":
    main()
