"""The miniature video model: a Wan 2.1 text-to-video model, trained by
``scripts/train_miniature_video.py`` on the clips of ``testbed.videoworld``, so that video erasure
(the refusal vector, CURE's single text projection in a DiT, the fine-tuned node) can be measured
on a transformer that really draws what it is asked for.

It is ComfyUI's own Wan 2.1 (``WanModel``: patch embedding, self-attention with 3-D RoPE,
cross-attention to the text rows through ``text_embedding``, flow matching with Wan's shift 8), a
umT5-style encoder through ComfyUI's Wan text-encoder code (``comfy.text_encoders.wan``) with a small
SentencePiece vocabulary of the world's words (shipped inside the model file, as umT5's is in real
ones), and Wan 2.1's causal video autoencoder (8× in space, 4× in time, 16 latents) at 8 base
channels, which ComfyUI's VAE loader builds from its weights. One ``.safetensors`` holds all three
(keys prefixed ``model.``, ``clip.``, ``vae.``). A clip is 9 frames of 64×64: an ``EmptyHunyuanLatentVideo``
(or Wan's empty latent) of 64×64, length 9 gives 16×3×8×8 latents.
"""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.text_encoders.wan

from .miniature import read_model_file

MODEL_FILE = Path(__file__).resolve().parents[1] / "models" / "miniature_video_world.safetensors"
FRAMES = 9
FRAME_SIZE = 64
LATENT_SHAPE = (16, 3, 8, 8)        # channels, latent frames (1 + (9 - 1) / 4), height, width

DIT_CONFIG = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "text_len": 512,
              "in_dim": 16, "dim": 128, "ffn_dim": 384, "freq_dim": 256, "text_dim": 64, "out_dim": 16,
              "num_heads": 4, "num_layers": 4, "window_size": (-1, -1), "qk_norm": True,
              "cross_attn_norm": True, "eps": 1e-6}
TEXT_ENCODER_CONFIG = {"d_model": 64, "d_ff": 256, "d_kv": 16, "num_heads": 4, "num_layers": 3}
VAE_CONFIG = {"dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True]}
SPIECE_VOCABULARY = 600             # byte fallback (every text tokenizes), the world's words whole, commas apart


def world_spiece_model() -> bytes:
    """A SentencePiece model (umT5's layout: pad 0, eos 1, unk 2; byte fallback) trained on prompts of
    the video world, so that its words are single pieces. Deterministic; the model file ships its bytes."""
    import random

    import sentencepiece

    from testbed.videoworld.clips import random_clip_scene, random_prompt
    rng = random.Random(0)
    sentences = [random_prompt(rng, random_clip_scene(rng)) for _ in range(4000)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=SPIECE_VOCABULARY, model_type="bpe",
        byte_fallback=True, num_threads=1, minloglevel=2, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        hard_vocab_limit=False, user_defined_symbols=[","])
    return model.getvalue()


def model_config() -> comfy.supported_models.WAN21_T2V:
    config = comfy.supported_models.WAN21_T2V(dict(DIT_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    return config


def build_dit():
    """The diffusion model (``BaseModel`` with Wan 2.1's flow-matching sampling), untrained."""
    return model_config().get_model({})


def build_clip(spiece_model: bytes | torch.Tensor) -> comfy.sd.CLIP:
    """ComfyUI's Wan CLIP object (umT5 tokenizer over ``spiece_model``) with the small encoder, untrained."""
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.wan.WanT5Tokenizer, comfy.text_encoders.wan.te())
    if isinstance(spiece_model, bytes):
        spiece_model = torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8)
    vocabulary = _spiece_size(spiece_model)
    return comfy.sd.CLIP(target=target, tokenizer_data={"spiece_model": spiece_model},
                         model_options={"umt5xxl_model_config": {**TEXT_ENCODER_CONFIG, "vocab_size": vocabulary},
                                        "dtype": torch.float32})


def _spiece_size(spiece_model: torch.Tensor) -> int:
    import sentencepiece
    return sentencepiece.SentencePieceProcessor(model_proto=spiece_model.numpy().tobytes()).get_piece_size()


def load_clip(state: dict[str, torch.Tensor]) -> comfy.sd.CLIP:
    """:func:`build_clip` with trained weights (a model file's ``clip`` part, its vocabulary included)."""
    clip = build_clip(state["spiece_model"])
    weights = {k: v for k, v in state.items() if k != "spiece_model"}
    clip.cond_stage_model.load_state_dict(weights, strict=True)
    return clip


def text_model(clip: comfy.sd.CLIP) -> torch.nn.Module:
    """The ``SDClipModel`` (umT5) inside a Wan CLIP object."""
    return clip.cond_stage_model.umt5xxl


@contextlib.contextmanager
def differentiable_text_encoder(model: torch.nn.Module):
    """ComfyUI's T5 layers add their residuals in place, which autograd cannot differentiate: inside
    this block they compute the same sums out of place; outside it, ComfyUI's own code runs."""
    from comfy.text_encoders.t5 import T5LayerFF, T5LayerSelfAttention

    def feed_forward(layer, x):
        return x + layer.DenseReluDense(layer.layer_norm(x))

    def self_attention(layer, x, mask=None, past_bias=None, optimized_attention=None):
        output, past_bias = layer.SelfAttention(layer.layer_norm(x), mask=mask, past_bias=past_bias,
                                                optimized_attention=optimized_attention)
        return x + output, past_bias

    patched = []
    for module in model.modules():
        if isinstance(module, T5LayerFF):
            module.forward = feed_forward.__get__(module)
            patched.append(module)
        elif isinstance(module, T5LayerSelfAttention):
            module.forward = self_attention.__get__(module)
            patched.append(module)
    try:
        yield model
    finally:
        for module in patched:
            del module.forward


def build_autoencoder() -> torch.nn.Module:
    from comfy.ldm.wan.vae import WanVAE
    return WanVAE(**VAE_CONFIG)


def wrap_vae(autoencoder_state: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's VAE object, built by its own loader from the weights (it reads Wan 2.1's layout and width)."""
    return comfy.sd.VAE(sd=autoencoder_state, dtype=torch.float32)


def load_miniature_video(path: Path = MODEL_FILE):
    """``(MODEL, CLIP, VAE, metadata)`` of the trained miniature video model."""
    parts, metadata = read_model_file(path, "scripts/train_miniature_video.py")
    base = build_dit()
    missing, unexpected = base.diffusion_model.load_state_dict(parts["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the miniature Wan model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}.")
    model = comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    return model, load_clip(parts["clip"]), wrap_vae(parts["vae"]), metadata


@functools.lru_cache(maxsize=1)
def latent_format():
    return model_config().latent_format
