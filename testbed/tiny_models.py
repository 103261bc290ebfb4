"""ComfyUI's own model classes at tiny widths with seeded random weights.

They have the real key names, the real text path (real tokenizers, real CLIP/T5 code) and
sample in milliseconds on a CPU, which makes them the test bed of the pack and the default
model of its demo. They draw noise, not pictures: nothing here is trained.
"""
from __future__ import annotations

import functools
import io
import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.hidream
import comfy.text_encoders.sd3_clip
import comfy.text_encoders.wan
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.ldm.wan.vae import WanVAE

_UNET_COMMON = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "model_channels": 32, "channel_mult": [1, 2],
    "num_res_blocks": [1, 1], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 64, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
# SD1.x forces 8 heads and SD2.x/SDXL 64-channel heads (their ``unet_extra_config``), hence the widths.
_SMALL_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3}
_POOLED_WIDTH = 32   # tiny CLIP-G width (its projection is square): the pooled vector label_emb reads
_SMALL_T5 = {"d_model": 64, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}


_SPIECE_WORDS = ("a an the of in on by with and photo painting picture image portrait video style artwork of "
                 "woman man person child cat dog horse car house tree flower city beach street night day sky "
                 "red blue green yellow orange black white walking running sitting smiling waving dancing "
                 "Van Gogh Claude Monet Starry Night Mickey Mouse watercolor cartoon character nude naked "
                 "violence blood star wars new hope detailed village quiet sunny over under").split()


@functools.lru_cache(maxsize=2)
def tiny_spiece_model(with_bos: bool = False) -> bytes:
    """A small SentencePiece model (umT5 / mT5 layout: pad 0, eos 1, unk 2; Gemma layout with ``with_bos``:
    pad 0, eos 1, bos 2, unk 3; byte fallback, so every text tokenizes), trained here in a second:
    neither umT5's (Wan), mT5's (Hunyuan-DiT) nor Gemma's (Lumina 2) tokenizer ships with ComfyUI."""
    import sentencepiece
    sentences = [" ".join(_SPIECE_WORDS[(i * 7 + j * 3) % len(_SPIECE_WORDS)] for j in range(12))
                 for i in range(400)]
    ids = {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3} if with_bos else \
        {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=320, model_type="unigram",
        byte_fallback=True, num_threads=1, minloglevel=2, **ids)
    return model.getvalue()


def _wan_clip_target(_config):
    return comfy.supported_models_base.ClipTarget(comfy.text_encoders.wan.WanT5Tokenizer, comfy.text_encoders.wan.te())


def _sd3_clip_target(_config):
    return comfy.supported_models_base.ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer,
                                                   comfy.text_encoders.sd3_clip.sd3_clip(True, True, True))


def _hidream_clip_target(_config):
    """ComfyUI's HiDream config names no text encoder (users load four with QuadrupleCLIPLoader): all four."""
    return comfy.supported_models_base.ClipTarget(comfy.text_encoders.hidream.HiDreamTokenizer,
                                                   comfy.text_encoders.hidream.hidream_clip())


# family -> (ComfyUI config class, tiny unet config, text-encoder options, latent channels, CLIP target or None)
_SPECS = {
    "SD1.x": (comfy.supported_models.SD15,
              {**_UNET_COMMON, "adm_in_channels": None, "use_linear_in_transformer": False},
              {"clip_l_model_config": {**_SMALL_CLIP, "hidden_size": 64}}, 4, None),
    # The smallest SD1.x UNet that ComfyUI's loaders recognise from its state dict (they match SD15 on
    # model_channels 320 and context_dim 768): one level, one ResBlock, 26 M parameters. Test-only
    # (baked checkpoints written by the stock save nodes and read back by the stock loaders).
    "SD1.x loadable": (comfy.supported_models.SD15,
                       {**_UNET_COMMON, "adm_in_channels": None, "use_linear_in_transformer": False,
                        "model_channels": 320, "context_dim": 768, "channel_mult": [1], "num_res_blocks": [1],
                        "transformer_depth": [1], "transformer_depth_output": [1, 1]},
                       {"clip_l_model_config": {**_SMALL_CLIP, "hidden_size": 768}}, 4, None),
    "SD2.x": (comfy.supported_models.SD20,
              {**_UNET_COMMON, "adm_in_channels": None, "use_linear_in_transformer": True, "model_channels": 64},
              {"clip_h_model_config": {**_SMALL_CLIP, "hidden_size": 64}}, 4, None),
    "SDXL": (comfy.supported_models.SDXL,
             {**_UNET_COMMON, "adm_in_channels": _POOLED_WIDTH + 6 * 256, "num_classes": "sequential",
              "use_linear_in_transformer": True, "model_channels": 64},
             {"clip_l_model_config": _SMALL_CLIP,
              "clip_g_model_config": {**_SMALL_CLIP, "hidden_size": _POOLED_WIDTH}}, 4, None),
    # SD3 pads the CLIP rows to 4096 and stacks the T5 rows under them: its T5 must be 4096 wide.
    "SD3": (comfy.supported_models.SD3,
            {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 1, "input_size": None,
             "adm_in_channels": 2 * _POOLED_WIDTH, "pos_embed_scaling_factor": None, "pos_embed_max_size": 16,
             "num_patches": 256, "x_block_self_attn_layers": [],
             "context_embedder_config": {"target": "torch.nn.Linear",
                                         "params": {"in_features": 4096, "out_features": 64}}},
            {"clip_l_model_config": _SMALL_CLIP, "clip_g_model_config": {**_SMALL_CLIP, "hidden_size": _POOLED_WIDTH},
             "t5xxl_model_config": {**_SMALL_T5, "d_model": 4096, "num_layers": 1}}, 16, _sd3_clip_target),
    "Flux": (comfy.supported_models.FluxSchnell,
             {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": _POOLED_WIDTH,
              "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
              "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True,
              "guidance_embed": False},
             {"clip_l_model_config": _SMALL_CLIP, "t5xxl_model_config": _SMALL_T5}, 16, None),
    "Chroma": (comfy.supported_models.Chroma,
               {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 64,
                "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
                "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64,
                "out_dim": 64, "hidden_dim": 64, "n_layers": 1},
               {"t5xxl_model_config": _SMALL_T5}, 16, None),
    "Wan 2.1": (comfy.supported_models.WAN21_T2V,
                {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512,
                 "in_dim": 16, "dim": 64, "ffn_dim": 128, "freq_dim": 256, "text_dim": 64, "out_dim": 16,
                 "num_heads": 2, "num_layers": 1, "window_size": (-1, -1), "qk_norm": True,
                 "cross_attn_norm": True, "eps": 1e-6},
                {"umt5xxl_model_config": {**_SMALL_T5, "vocab_size": 320}}, 16, _wan_clip_target),
    # The smallest Wan 2.1 that ComfyUI's loaders recognise from its state dict (they read 128-channel heads and
    # build the 4096-wide text embedding of umT5-XXL): one block, 128 wide, with a 4096-wide one-layer umT5.
    # Test-only (files in the formats users load, read back by the stock loaders).
    "Wan 2.1 loadable": (comfy.supported_models.WAN21_T2V,
                         {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512,
                          "in_dim": 16, "dim": 128, "ffn_dim": 128, "freq_dim": 256, "text_dim": 4096, "out_dim": 16,
                          "num_heads": 1, "num_layers": 1, "window_size": (-1, -1), "qk_norm": True,
                          "cross_attn_norm": True, "eps": 1e-6},
                         {"umt5xxl_model_config": {**_SMALL_T5, "d_model": 4096, "num_layers": 1, "vocab_size": 320}},
                         16, _wan_clip_target),
    "LTX-Video": (comfy.supported_models.LTXV,
                  {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
                   "num_attention_heads": 2, "caption_channels": 64, "num_layers": 1},
                  {"t5xxl_model_config": _SMALL_T5}, 128, None),
    "Mochi": (comfy.supported_models.GenmoMochi,
              {"image_model": "mochi_preview", "patch_size": 2, "in_channels": 12, "hidden_size_x": 64,
               "hidden_size_y": 64, "depth": 1, "num_heads": 2, "mlp_ratio_x": 192.0, "mlp_ratio_y": 2.0,
               "use_t5": True, "t5_feat_dim": 64, "t5_token_length": 256, "learn_sigma": False, "qk_norm": True,
               "qkv_bias": False, "out_bias": True, "attn_drop": 0.0, "patch_embed_bias": True,
               "timestep_mlp_bias": True, "attend_to_padding": False, "timestep_scale": 1000.0,
               "use_extended_posenc": False, "posenc_preserve_area": True, "rope_theta": 10000.0},
              {"t5xxl_model_config": _SMALL_T5}, 12, None),
    # PixArt's position embedding needs a latent of at least 64x64 (512 px); Mochi asserts a 12288-wide MLP.
    "PixArt": (comfy.supported_models.PixArtSigma,
               {"image_model": "pixart_sigma", "input_size": 16, "patch_size": 2, "in_channels": 4, "hidden_size": 64,
                "depth": 1, "num_heads": 2, "caption_channels": 64, "pe_interpolation": 1.0, "model_max_length": 300,
                "micro_condition": False},
               {"t5xxl_model_config": _SMALL_T5}, 4, None),
    "HunyuanVideo": (comfy.supported_models.HunyuanVideo,
                     {"image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32,
                      "context_in_dim": 64, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1,
                      "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 256, "patch_size": [1, 2, 2],
                      "qkv_bias": True, "guidance_embed": False, "byt5": False, "meanflow": False,
                      "use_cond_type_embedding": False, "vision_in_dim": None},
                     {"clip_l_model_config": _SMALL_CLIP,
                      "llama_model_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                                             "num_attention_heads": 2, "num_key_value_heads": 1}}, 16, None),
    "Stable Cascade": (comfy.supported_models.Stable_Cascade_C,
                       {"stable_cascade_stage": "c", "c_in": 16, "c_out": 16, "c_r": 32, "c_cond": 64,
                        "c_hidden": [64, 64], "nhead": [2, 2], "blocks": [[1, 1], [1, 1]],
                        "block_repeat": [[1, 1], [1, 1]], "level_config": ["CTA", "CTA"], "c_clip_text": 32,
                        "c_clip_text_pooled": 32, "c_clip_img": 768, "c_clip_seq": 4},
                       {"clip_g_model_config": _SMALL_CLIP}, 16, None),
    "Qwen-Image": (comfy.supported_models.QwenImage,
                   {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                    "num_layers": 1, "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": 64,
                    "axes_dims_rope": [8, 12, 12]},
                   {"qwen25_7b_model_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                               "num_attention_heads": 2, "num_key_value_heads": 1}}, 16, None),
    "Lumina 2": (comfy.supported_models.Lumina2,
                 {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "n_layers": 1,
                  "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 2, "multiple_of": 16, "ffn_dim_multiplier": 1.0,
                  "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": 64, "axes_dims": [8, 12, 12],
                  "axes_lens": [1, 64, 64], "rope_theta": 10000.0},
                 {"gemma2_2b_model_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                                             "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 320}},
                 16, None),
    "Cosmos 1.0": (comfy.supported_models.CosmosT2V,
                   {"image_model": "cosmos", "max_img_h": 240, "max_img_w": 240, "max_frames": 128, "in_channels": 16,
                    "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1, "model_channels": 64,
                    "block_config": "FA-CA-MLP", "concat_padding_mask": True, "pos_emb_cls": "rope3d",
                    "pos_emb_learnable": False, "pos_emb_interpolation": "crop", "block_x_format": "THWBD",
                    "affline_emb_norm": True, "use_adaln_lora": True, "adaln_lora_dim": 32, "num_blocks": 2,
                    "num_heads": 2, "extra_per_block_abs_pos_emb": True, "rope_h_extrapolation_ratio": 1.0,
                    "rope_w_extrapolation_ratio": 1.0, "rope_t_extrapolation_ratio": 2.0,
                    "extra_per_block_abs_pos_emb_type": "learnable", "crossattn_emb_channels": 64},
                   {"t5xxl_model_config": _SMALL_T5}, 16, None),
    "Cosmos Predict2": (comfy.supported_models.CosmosT2IPredict2,
                        {"image_model": "cosmos_predict2", "max_img_h": 240, "max_img_w": 240, "max_frames": 128,
                         "in_channels": 16, "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1,
                         "model_channels": 64, "concat_padding_mask": True, "crossattn_emb_channels": 64,
                         "pos_emb_cls": "rope3d", "pos_emb_learnable": True, "pos_emb_interpolation": "crop",
                         "min_fps": 1, "max_fps": 30, "use_adaln_lora": True, "adaln_lora_dim": 32, "num_blocks": 1,
                         "num_heads": 2, "extra_per_block_abs_pos_emb": False, "rope_h_extrapolation_ratio": 4.0,
                         "rope_w_extrapolation_ratio": 4.0, "rope_t_extrapolation_ratio": 1.0},
                        {"t5xxl_model_config": _SMALL_T5}, 16, None),
    # Two double-stream and two single-stream blocks: caption_projection.0-3 read Llama layers 0, 1, 3, 3
    # (the real model's list reads layer 31 from block 31 on), caption_projection.4 reads the T5 rows.
    "HiDream": (comfy.supported_models.HiDream,
                {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
                 "num_layers": 2, "num_single_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2,
                 "caption_channels": [64, 48], "text_emb_dim": 2 * _POOLED_WIDTH, "num_routed_experts": 2,
                 "num_activated_experts": 1, "axes_dims_rope": [16, 8, 8], "max_resolution": [16, 16],
                 "llama_layers": [0, 1, 3, 3]},
                {"clip_l_model_config": _SMALL_CLIP, "clip_g_model_config": {**_SMALL_CLIP, "hidden_size": _POOLED_WIDTH},
                 "t5xxl_model_config": _SMALL_T5,
                 "llama_model_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 4,
                                        "num_attention_heads": 2, "num_key_value_heads": 1}}, 16, _hidream_clip_target),
    # Depth 2: Hunyuan-DiT's long skips need an even depth. mT5 64 wide (the attention pool has 8 heads).
    "Hunyuan-DiT": (comfy.supported_models.HunyuanDiT,
                    {"image_model": "hydit", "input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 64,
                     "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "text_states_dim": 48, "text_states_dim_t5": 64,
                     "text_len": 77, "text_len_t5": 256},
                    {"hydit_clip_model_config": {"hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 2,
                                                 "num_hidden_layers": 2},
                     "mt5xl_model_config": {**_SMALL_T5, "vocab_size": 320}}, 4, None),
}
# Families whose VAE this module can build (not the video VAEs of LTX-Video, Mochi, HunyuanVideo): the demo's list.
DEMO_FAMILIES = ("SD1.x", "SD2.x", "SDXL", "SD3", "Flux", "Chroma", "Wan 2.1", "PixArt", "Cosmos Predict2", "Lumina 2",
                 "Qwen-Image", "HiDream", "Hunyuan-DiT")
_WAN_VAE_FAMILIES = ("Wan 2.1", "Cosmos Predict2", "Qwen-Image")      # they decode with the Wan 2.1 VAE


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> None:
    """Seeded fan-in-scaled weights (and floating buffers): ComfyUI allocates them with ``torch.empty``.

    Values are drawn on each parameter's own device (a real-size text encoder on a GPU is
    initialised in seconds); on the CPU they are the same for the same seed.
    """
    generators: dict[torch.device, torch.Generator] = {}
    floating_buffers = [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]   # e.g. SD3's pos_embed
    for name, p in [*module.named_parameters(), *floating_buffers]:
        if p.numel() == 0:
            continue
        if p.device not in generators:
            generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        if p.ndim >= 2:
            fan_in = p[0].numel()
            values = torch.randn(p.shape, generator=generators[p.device], device=p.device) / math.sqrt(fan_in)
        elif name.endswith("weight"):
            values = torch.ones(p.shape, device=p.device)          # norm scales
        else:
            values = torch.zeros(p.shape, device=p.device)         # biases
        p.copy_(values.to(p.dtype))


def tiny_model(family: str, seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """The diffusion model of ``family`` at tiny size, wrapped as ComfyUI's MODEL."""
    config_class, unet_config = _SPECS[family][:2]
    model_config = config_class(dict(unet_config))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def tiny_clip(family: str, seed: int = 0, embedding_directory: str | None = None) -> comfy.sd.CLIP:
    """ComfyUI's CLIP object for ``family`` with tiny encoders and the real tokenizers."""
    config_class, unet_config, clip_options, _, clip_target = _SPECS[family]
    config = config_class(dict(unet_config))
    target = clip_target(config) if clip_target else config.clip_target()
    tokenizer_data = {}
    if "umt5xxl_model_config" in clip_options or "gemma2_2b_model_config" in clip_options:
        tokenizer_data = {"spiece_model": tiny_spiece_model(with_bos="gemma2_2b_model_config" in clip_options)}
    if "mt5xl_model_config" in clip_options:       # Hunyuan-DiT checkpoints carry it under this key
        tokenizer_data = {"mt5xl.spiece_model": tiny_spiece_model()}
    clip = comfy.sd.CLIP(target=target, embedding_directory=embedding_directory, tokenizer_data=tokenizer_data,
                         model_options={**clip_options, "dtype": torch.float32})
    qwen = getattr(clip.cond_stage_model, "qwen25_7b", None)
    if qwen is not None:     # Qwen-VL's 630 M-parameter vision tower: text prompts never reach it
        qwen.transformer.visual = None
    randomize(clip.cond_stage_model, seed + 1)
    return clip


def tiny_vae(seed: int = 0, latent_channels: int = 4, video: bool = False) -> comfy.sd.VAE:
    """An image KL autoencoder (8× downscale, 32 base channels, ``latent_channels`` latents), or with
    ``video`` a Wan 2.1 video VAE (8× spatial, 4× temporal, 16 latents) with 8 base channels."""
    if video:
        wan = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=[False, True, True])
        randomize(wan, seed + 2)
        return comfy.sd.VAE(sd=wan.state_dict(), dtype=torch.float32)
    ddconfig = {"double_z": True, "z_channels": latent_channels, "resolution": 64, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    config = {"params": {"ddconfig": ddconfig, "embed_dim": latent_channels}}
    autoencoder = AutoencoderKL(**config["params"])
    randomize(autoencoder, seed + 2)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict(), config=config, dtype=torch.float32)
    vae.latent_channels = latent_channels
    return vae


def latent_channels(family: str) -> int:
    return _SPECS[family][3]


def tiny_checkpoint(family: str, seed: int = 0):
    """``(MODEL, CLIP, VAE)`` as a checkpoint loader would return them (families in ``DEMO_FAMILIES``)."""
    if family not in DEMO_FAMILIES:
        raise ValueError(f"No tiny VAE for {family}; families with one: {', '.join(DEMO_FAMILIES)}.")
    return (tiny_model(family, seed), tiny_clip(family, seed),
            tiny_vae(seed, latent_channels(family), video=family in _WAN_VAE_FAMILIES))


# The smallest SD1.x UNet that ComfyUI's checkpoint detection calls SD1.x: detection reads the
# layout from the shapes and then matches ``comfy.supported_models.SD15.unet_config``, which fixes
# model_channels 320 and context_dim 768 (the tiny SD1.x above is too narrow to be recognised).
# One level with one res block and one transformer on each side keeps it at 25 M weights.
DETECTABLE_SD15_UNET = {**_UNET_COMMON, "model_channels": 320, "context_dim": 768, "channel_mult": [1],
                        "num_res_blocks": [1], "transformer_depth": [1], "transformer_depth_output": [1, 1],
                        "transformer_depth_middle": 1, "adm_in_channels": None, "use_linear_in_transformer": False}


def tiny_sd15_checkpoint_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """An all-in-one SD1.x checkpoint's state dict (``model.diffusion_model.*``, ``cond_stage_model.*``)
    that ``CheckpointLoaderSimple`` loads and detects as SD1.x, with seeded random weights.

    The UNet is :data:`DETECTABLE_SD15_UNET`; the text encoder is a full-size CLIP-L (ComfyUI
    builds SD1.x's from a fixed config, so a smaller one would not load). No VAE: ComfyUI builds
    SD1.x's at full size too, and nothing that reads weights needs one (the loader warns).
    """
    model_config = comfy.supported_models.SD15(dict(DETECTABLE_SD15_UNET))
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed)
    clip = comfy.sd.CLIP(target=model_config.clip_target(), model_options={"dtype": torch.float32})
    randomize(clip.cond_stage_model, seed + 1)
    state_dict = model.state_dict_for_saving(clip.get_sd())
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state_dict.items()}
