"""ComfyUI's own SD1.x / SD2.x / SDXL classes at tiny widths with seeded random weights.

They have the real key names, the real text path (real tokenizers, real CLIP code) and
sample in milliseconds on a CPU, which makes them the test bed of the pack and the
default model of its demo. They draw noise, not pictures: nothing here is trained.
"""
from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
from comfy.ldm.models.autoencoder import AutoencoderKL

TINY_FAMILIES = ("SD1.x", "SD2.x", "SDXL")

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

_SPECS = {
    "SD1.x": (comfy.supported_models.SD15,
              {**_UNET_COMMON, "adm_in_channels": None, "use_linear_in_transformer": False},
              {"clip_l_model_config": {**_SMALL_CLIP, "hidden_size": 64}}),
    "SD2.x": (comfy.supported_models.SD20,
              {**_UNET_COMMON, "adm_in_channels": None, "use_linear_in_transformer": True, "model_channels": 64},
              {"clip_h_model_config": {**_SMALL_CLIP, "hidden_size": 64}}),
    "SDXL": (comfy.supported_models.SDXL,
             {**_UNET_COMMON, "adm_in_channels": _POOLED_WIDTH + 6 * 256, "num_classes": "sequential",
              "use_linear_in_transformer": True, "model_channels": 64},
             {"clip_l_model_config": _SMALL_CLIP,
              "clip_g_model_config": {**_SMALL_CLIP, "hidden_size": _POOLED_WIDTH}}),
}


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> None:
    """Seeded fan-in-scaled weights: ComfyUI allocates layers with ``torch.empty``."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.numel() == 0:
            continue
        if p.ndim >= 2:
            fan_in = p[0].numel()
            values = torch.randn(p.shape, generator=generator) / math.sqrt(fan_in)
        elif name.endswith("weight"):
            values = torch.ones(p.shape)          # norm scales
        else:
            values = torch.zeros(p.shape)         # biases
        p.copy_(values.to(p.dtype))


def tiny_model(family: str, seed: int = 0, unet_overrides: dict | None = None) -> comfy.model_patcher.ModelPatcher:
    """The diffusion model of ``family`` at tiny size, wrapped as ComfyUI's MODEL."""
    config_class, unet_config, _ = _SPECS[family]
    model_config = config_class({**unet_config, **(unet_overrides or {})})
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def tiny_clip(family: str, seed: int = 0, embedding_directory: str | None = None) -> comfy.sd.CLIP:
    """ComfyUI's CLIP object for ``family`` with a tiny encoder and the real tokenizer."""
    config_class, unet_config, clip_options = _SPECS[family]
    target = config_class(dict(unet_config)).clip_target()
    clip = comfy.sd.CLIP(target=target, embedding_directory=embedding_directory,
                         model_options={**clip_options, "dtype": torch.float32})
    randomize(clip.cond_stage_model, seed + 1)
    return clip


def tiny_vae(seed: int = 0) -> comfy.sd.VAE:
    """An SD-style KL autoencoder (8× downscale, 4 latent channels) with 32 base channels."""
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    config = {"params": {"ddconfig": ddconfig, "embed_dim": 4}}
    autoencoder = AutoencoderKL(**config["params"])
    randomize(autoencoder, seed + 2)
    return comfy.sd.VAE(sd=autoencoder.state_dict(), config=config, dtype=torch.float32)


def tiny_checkpoint(family: str, seed: int = 0):
    """``(MODEL, CLIP, VAE)`` as a checkpoint loader would return them."""
    return tiny_model(family, seed), tiny_clip(family, seed), tiny_vae(seed)
