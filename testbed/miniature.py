"""The miniature-world model: an SD1.x-style text-to-image model, trained by
``scripts/train_miniature.py`` on the procedural world of ``testbed.miniworld``, that really
draws the concepts it is prompted with, so that erasure can be measured without a download.

It is ComfyUI's own SD1.x architecture (UNet with cross-attention, CLIP text encoder with the real
SD1 tokenizer, KL autoencoder) at a small size: one ``.safetensors`` file in ``models/`` holds all
three (keys prefixed ``model.``, ``clip.``, ``vae.``). Its autoencoder downsamples by 2, not 8:
an ``Empty Latent Image`` of 128×128 gives 16×16 latents, which decode to 32×32 pictures.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import safetensors
import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
from comfy.ldm.models.autoencoder import AutoencoderKL

MODEL_FILE = Path(__file__).resolve().parents[1] / "models" / "miniature_world.safetensors"
LATENT_SIZE = 16                   # latents per side; 128×128 in an Empty Latent Image
VAE_FACTOR = 2                     # pixels per latent per side
IMAGE_SIZE = LATENT_SIZE * VAE_FACTOR
LATENT_SHAPE = (4, LATENT_SIZE, LATENT_SIZE)     # channels, height, width

UNET_CONFIG = {
    "use_checkpoint": False, "image_size": LATENT_SIZE, "in_channels": 4, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None, "use_linear_in_transformer": False,
    "model_channels": 32, "channel_mult": [1, 2, 4], "num_res_blocks": [1, 1, 1],
    "transformer_depth": [0, 1, 1], "transformer_depth_output": [0, 0, 1, 1, 1, 1], "transformer_depth_middle": 1,
    "context_dim": 64, "use_temporal_attention": False, "use_temporal_resblock": False,
}
TEXT_ENCODER_CONFIG = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 3}
VAE_CONFIG = {"params": {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": IMAGE_SIZE, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}}


def model_config() -> comfy.supported_models.SD15:
    config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    return config


def build_unet() -> torch.nn.Module:
    """The diffusion model (``BaseModel`` with SD1.x's eps prediction and noise schedule), untrained."""
    return model_config().get_model({})


def build_clip() -> comfy.sd.CLIP:
    """ComfyUI's SD1.x CLIP object (real tokenizer) with the small text encoder, untrained."""
    return comfy.sd.CLIP(target=model_config().clip_target(),
                         model_options={"clip_l_model_config": TEXT_ENCODER_CONFIG, "dtype": torch.float32})


def load_clip(state: dict[str, torch.Tensor]) -> comfy.sd.CLIP:
    """:func:`build_clip` with trained weights (a model file's ``clip`` part)."""
    clip = build_clip()
    clip.cond_stage_model.load_state_dict(state, strict=True)
    return clip


@contextlib.contextmanager
def differentiable_text_encoder(text_model: torch.nn.Module):
    """ComfyUI's ``CLIPLayer`` adds its residuals in place, which autograd cannot differentiate: inside this
    block each layer computes the same sum out of place (training, and attacks that learn token embeddings);
    outside it, ComfyUI's own code runs."""
    from comfy.clip_model import CLIPLayer

    def forward(layer, x, mask=None, optimized_attention=None):
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))

    layers = [m for m in text_model.modules() if isinstance(m, CLIPLayer)]
    for layer in layers:
        layer.forward = forward.__get__(layer)
    try:
        yield text_model
    finally:
        for layer in layers:
            del layer.forward            # the instance attribute goes: the class's forward again


def build_autoencoder() -> AutoencoderKL:
    return AutoencoderKL(**VAE_CONFIG["params"])


def wrap_vae(autoencoder_state: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's VAE object around the autoencoder's weights, with its 2× (not 8×) scale."""
    vae = comfy.sd.VAE(sd=autoencoder_state, config=VAE_CONFIG, dtype=torch.float32)
    vae.latent_channels = 4
    vae.downscale_ratio = vae.upscale_ratio = VAE_FACTOR
    return vae


def split_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A model file's tensors by part (``model.``, ``clip.``, ``vae.``), floats in fp32 (others, such as a
    tokenizer's bytes, as stored)."""
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "clip": {}, "vae": {}}
    for key, value in state.items():
        prefix, rest = key.split(".", 1)
        parts[prefix][rest] = value.float() if value.is_floating_point() else value
    return parts


def read_model_file(path: Path, script: str = "scripts/train_miniature.py (about an hour on a 2-core CPU)"
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The file's weights split by part (``model``, ``clip``, ``vae``) and its metadata (JSON values
    decoded), in one read; ``script`` is what trains the file again, for the error when it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"No miniature model at {path}: the pack ships one in models/; restore it "
                                f"(git checkout models/{path.name}) or train it again with {script}; see "
                                "docs/miniature-world.md.")
    with safetensors.safe_open(str(path), framework="pt") as f:
        parts = split_state({key: f.get_tensor(key) for key in f.keys()})
        metadata = f.metadata() or {}
    return parts, {k: json.loads(v) for k, v in metadata.items()}


def load_miniature(path: Path = MODEL_FILE):
    """``(MODEL, CLIP, VAE, metadata)`` of the trained miniature model."""
    parts, metadata = read_model_file(path)
    unet = build_unet()
    missing, unexpected = unet.diffusion_model.load_state_dict(parts["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the miniature UNet: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    model = comfy.model_patcher.ModelPatcher(unet, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    return model, load_clip(parts["clip"]), wrap_vae(parts["vae"]), metadata
