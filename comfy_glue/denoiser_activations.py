"""Capture the input activations of chosen linear layers while the denoiser runs on given prompts.

The refusal vector's original recipe: run the diffusion model on each prompt for a few steps
from the same noise, record what enters the chosen layers, and build the refusal subspace per
layer from those activations. Each (prompt, step) gives rows per layer: the layer input averaged
over its image/video tokens (the paper), or the inputs of the image tokens themselves (what the
pack measured to erase: the concept reaches each token in its own mixture of directions, and the
mean keeps one row per step).
"""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.sample
import comfy.utils

EVERY_TOKEN, TOKEN_MEAN = "every image token", "token mean (paper)"
POOLINGS = (EVERY_TOKEN, TOKEN_MEAN)
TOKENS_PER_CALL = 64    # at most this many image tokens per layer and call (evenly spaced): bounds the rows held


def empty_latent(model, size: int, frames: int = 1) -> torch.Tensor:
    """A zero latent of the model's kind: ``size``×``size`` latent pixels, ``frames`` latent frames for video models."""
    latent_format = model.model.latent_format
    time_axis = (frames,) if getattr(latent_format, "latent_dimensions", 2) == 3 else ()
    return torch.zeros(1, latent_format.latent_channels, *time_axis, size, size)


def pooled_rows(inputs: torch.Tensor, pooling: str, stride: int = 1,
                tokens_per_call: int = TOKENS_PER_CALL) -> torch.Tensor:
    """One call's layer input as rows ``[n, d]``: the token mean (``n = 1``), or up to ``tokens_per_call`` tokens
    ``stride`` apart counted from the last one. Counting from the end pairs the image tokens of joint text+image
    sequences whose text part differs in length between prompts (Lumina 2 puts the caption first).

    One latent at cfg 1: the call sees a single sample, whatever the layout of its token axes (batch-first, or
    Cosmos' T-H-W-B-D), so every axis but the features is a token axis."""
    x = inputs.detach().float().reshape(-1, inputs.shape[-1])
    if pooling == TOKEN_MEAN:
        return x.mean(0, keepdim=True).cpu()
    return x.flip(0)[::stride][:tokens_per_call].flip(0).cpu()


def capture_layer_inputs(model, conditionings: list, keys: list[str], steps: int = 4, size: int = 16,
                         seed: int = 0, pooling: str = TOKEN_MEAN) -> list[dict[str, torch.Tensor]]:
    """For every conditioning, ``{key: [rows, d]}``: each layer's input at each step, pooled by ``pooling``
    (steps after steps). Every token: each layer keeps the same tokens in every call (the stride its first call
    needs for ``TOKENS_PER_CALL`` tokens, the last tokens where a call has fewer), so rows line up token by token.

    Sampling uses cfg 1 (ComfyUI then evaluates the conditional branch only) and the same noise for
    every prompt, so pairs are compared at the same noise levels. Reports progress through
    ComfyUI's progress bar (one tick per denoiser call).
    """
    if steps < 1 or size < 1:
        raise ValueError(f"steps and size must be positive (got {steps}, {size}).")
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    modules = {key: comfy.utils.get_attr(model.model, key.removesuffix(".weight")) for key in keys}
    captured: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    strides: dict[str, int] = {}

    def hook_for(key):
        def hook(_module, inputs):
            tokens = inputs[0].numel() // inputs[0].shape[-1]
            stride = strides.setdefault(key, -(-tokens // TOKENS_PER_CALL))
            captured[key].append(pooled_rows(inputs[0], pooling, stride))
        return hook

    latent = empty_latent(model, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    progress = comfy.utils.ProgressBar(len(conditionings) * steps)
    handles = [module.register_forward_pre_hook(hook_for(key)) for key, module in modules.items()]
    results = []
    try:
        for conditioning in conditionings:
            for rows in captured.values():
                rows.clear()
            comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", conditioning, conditioning, latent,
                                disable_pbar=True, seed=seed, callback=lambda *_: progress.update(1))
            for key, rows in captured.items():
                if len(rows) != steps:
                    raise RuntimeError(f"Captured {len(rows)} activations of {key} for {steps} steps: the layer "
                                       "is not called once per step, so it cannot be used for the denoiser source.")
            results.append({key: list(rows) for key, rows in captured.items()})
            comfy.model_management.throw_exception_if_processing_interrupted()
    finally:
        for handle in handles:
            handle.remove()
    # Calls that saw fewer tokens (a shorter joint sequence) set how many of the last rows every call keeps.
    kept = {key: min(rows.shape[0] for result in results for rows in result[key]) for key in keys}
    return [{key: torch.cat([rows[rows.shape[0] - kept[key]:] for rows in result[key]]) for key in keys}
            for result in results]
