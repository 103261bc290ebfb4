"""Capture the input activations of chosen linear layers while the denoiser runs on given prompts.

The refusal vector's original recipe: run the diffusion model on each prompt for a few steps
from the same noise, record what enters the chosen layers, and build the refusal subspace per
layer from those activations. Each (prompt, step) gives one row per layer: the layer input
averaged over its image/video tokens.
"""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.sample
import comfy.utils


def empty_latent(model, size: int, frames: int = 1) -> torch.Tensor:
    """A zero latent of the model's kind: ``size``×``size`` latent pixels, ``frames`` latent frames for video models."""
    latent_format = model.model.latent_format
    time_axis = (frames,) if getattr(latent_format, "latent_dimensions", 2) == 3 else ()
    return torch.zeros(1, latent_format.latent_channels, *time_axis, size, size)


def capture_layer_inputs(model, conditionings: list, keys: list[str], steps: int = 4, size: int = 16,
                         seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """For every conditioning, ``{key: [steps, d]}``: the token-averaged input of each layer at each step.

    Sampling uses cfg 1 (ComfyUI then evaluates the conditional branch only) and the same noise for
    every prompt, so pairs are compared at the same noise levels. Reports progress through
    ComfyUI's progress bar (one tick per denoiser call).
    """
    if steps < 1 or size < 1:
        raise ValueError(f"steps and size must be positive (got {steps}, {size}).")
    modules = {key: comfy.utils.get_attr(model.model, key.removesuffix(".weight")) for key in keys}
    captured: dict[str, list[torch.Tensor]] = {key: [] for key in keys}

    def hook_for(key):
        def hook(_module, inputs):
            # One latent at cfg 1: the call sees a single sample, whatever the layout of its token axes
            # (batch-first, or Cosmos' T-H-W-B-D); average every axis but the features.
            x = inputs[0].detach().float()
            captured[key].append(x.reshape(-1, x.shape[-1]).mean(0, keepdim=True).cpu())
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
            results.append({key: torch.cat(rows) for key, rows in captured.items()})
            comfy.model_management.throw_exception_if_processing_interrupted()
    finally:
        for handle in handles:
            handle.remove()
    for result in results:
        for key, rows in result.items():
            if rows.shape[0] != steps:
                raise RuntimeError(f"Captured {rows.shape[0]} activations of {key} for {steps} steps: the layer "
                                   "is not called once per step, so it cannot be used for the denoiser source.")
    return results
