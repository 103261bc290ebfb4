"""Write the erasure carried by a patched MODEL: as a standard LoRA file that stock loaders read (the
**Save Erasure as LoRA** node), or baked into the tensors of the checkpoint it was loaded from (the command
line's checkpoint output)."""
from __future__ import annotations

import json
import os

import torch

import comfy.lora
import comfy.model_detection
import comfy.utils
import folder_paths

from .patching import ErasureAdapter, base_weights_identity, erasures_on, is_bias, layer_count
from .weights import weight_shape

LORA_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def erasure_recipes(model) -> list[dict[str, str]]:
    """The recipe of every erasure on ``model``, in the order they were applied."""
    return [erasure.record.recipe for erasure in erasures_on(model)]


def erased_state_dict(model, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint (or diffusion model file) ``state_dict`` that ``model`` was loaded from, with its erased
    layers baked in.

    Each erased weight is what ComfyUI computes when it applies the patches
    (``comfy.lora.calculate_weight`` on the stored weight in float32, times its scale when the file keeps one:
    scaled fp8's ``scale_weight``, the mixed-precision layout's ``weight_scale``), stored back in the input's
    dtype with the same scale; every other tensor is the input's own. ``state_dict`` itself is not modified.
    """
    keys = [key for key, patch_list in model.patches.items() if any(isinstance(p[1], ErasureAdapter) for p in patch_list)]
    if not keys:
        raise ValueError("This MODEL carries no erasure: connect the model output of an Erase Concepts node.")
    prefix = comfy.model_detection.unet_prefix_from_state_dict(state_dict)
    if not any(k.startswith(prefix) for k in state_dict):       # a diffusion model file: no prefix at all
        prefix = ""
    baked = dict(state_dict)
    for key in keys:
        stored_key = prefix + key.removeprefix("diffusion_model.")
        stored = state_dict.get(stored_key)
        if stored is None or tuple(stored.shape) != weight_shape(model, key):
            raise ValueError(f"The checkpoint stores {key} under another name or shape than ComfyUI uses; write the "
                             "erasure as a LoRA instead (cure-erase --lora).")
        scale = _stored_scale(state_dict, stored_key)
        weight = stored.to(torch.float32, copy=True) * scale
        weight = comfy.lora.calculate_weight(model.patches[key], weight, key) / scale
        if stored.dtype in FP8_DTYPES:          # fp8 saturates instead of overflowing to inf
            limit = torch.finfo(stored.dtype).max
            weight = weight.clamp(-limit, limit)
        baked[stored_key] = weight.to(stored.dtype).contiguous()
    return baked


def _stored_scale(state_dict: dict[str, torch.Tensor], weight_key: str) -> torch.Tensor | float:
    """The per-layer scale a quantized checkpoint keeps beside a weight (1 for a plain one)."""
    base = weight_key.removesuffix("weight")
    for name in (base + "scale_weight", base + "weight_scale"):
        if name in state_dict:
            return state_dict[name].to(torch.float32)
    return 1.0


def erasure_lora(model, dtype: torch.dtype = torch.float16) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state dict, metadata)`` of every erasure patch on ``model``, in ComfyUI's generic LoRA key format.

    Keys are ``diffusion_model.<layer>.lora_up.weight`` / ``.lora_down.weight`` (no alpha, so the
    loader applies ``up @ down`` at strength 1); each patch's strength is folded into ``up``, and
    several erasures on one layer are stacked along the rank. A bias change (the refusal vector's mean
    shift) is ``diffusion_model.<layer>.diff_b``, the sum of every erasure's on that bias, which ComfyUI's
    loader adds to the bias. The metadata holds the recipes and a hash of the base weights the erasure
    was computed for.
    """
    erasures = erasures_on(model)
    if not erasures:
        raise ValueError("This MODEL carries no erasure: connect the model output of an Erase Concepts node.")
    factors: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for erasure in erasures:
        for key, (up, down) in erasure.layers.items():
            factors.setdefault(key, []).append((up.float() * erasure.strength, down.float()))
    recipes = [erasure.record.recipe for erasure in erasures]
    state_dict = {}
    for key in sorted(factors):
        if is_bias(key):
            change = sum((u @ d).flatten() for u, d in factors[key])
            state_dict[f"{key.removesuffix('.bias')}.diff_b"] = change.to(dtype).contiguous()
            continue
        name = key.removesuffix(".weight")
        state_dict[f"{name}.lora_up.weight"] = torch.cat([u for u, _ in factors[key]], dim=1).to(dtype).contiguous()
        state_dict[f"{name}.lora_down.weight"] = torch.cat([d for _, d in factors[key]], dim=0).to(dtype).contiguous()
    digest, _ = base_weights_identity(model, factors)
    metadata = {"erasure_recipes": json.dumps(recipes), "erasure_base_weights_sha256": digest,
                "erasure_layers": str(layer_count(factors)),
                "ss_network_module": "comfyui-concept-erasure"}
    return state_dict, metadata


def save_lora_to_folder(model, filename_prefix: str, dtype: str) -> tuple[str, str]:
    """Write :func:`erasure_lora` of ``model`` to the first ``loras`` folder: ``(path, message)``."""
    state_dict, metadata = erasure_lora(model, LORA_DTYPES[dtype])
    folder = folder_paths.get_folder_paths("loras")[0]
    full_folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder)
    path = os.path.join(full_folder, f"{filename}_{counter:05}_.safetensors")
    comfy.utils.save_torch_file(state_dict, path, metadata=metadata)
    return path, f"Saved {metadata['erasure_layers']} erased layers to {path}"
