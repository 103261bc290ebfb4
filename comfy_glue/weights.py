"""Reading a MODEL's weights as the model computes with them, whatever format they are stored in.

A checkpoint's weights are not always plain floats: scaled fp8 files keep fp8 values and a per-layer
``scale_weight``, ComfyUI's mixed-precision layout keeps ``QuantizedTensor`` weights, the loader's
``weight_dtype`` can store plain fp8, and ComfyUI-GGUF keeps GGML blocks (a ``GGMLTensor`` whose storage
is bytes). An edit computed from the stored values instead of the weights they stand for is wrong by
the scale (or meaningless), so everything that edits, hashes or exports reads weights here.

The reading is ComfyUI's own: the layer's ``convert_weight`` (as ``ModelPatcher.patch_weight_to_device``
applies patches: to the converted float32 weight, then ``set_weight`` stores the result back in the
layer's format), a quantized tensor's ``dequantize``, and for GGUF the layer's own ``get_weight``.
"""
from __future__ import annotations

import torch

import comfy.lora
import comfy.model_patcher
import comfy.utils


def _layer(model, key: str):
    return comfy.utils.get_attr(model.model, key.rsplit(".", 1)[0]) if "." in key else None


def stored_weight(model, key: str) -> torch.Tensor:
    """The tensor as loaded, before any patch (ComfyUI's backup while a clone is patched in): in its storage
    format, not a copy."""
    backup = model.backup.get(key)
    return backup.weight if backup is not None else comfy.utils.get_attr(model.model, key)


def _is_gguf(tensor: torch.Tensor) -> bool:
    """A ComfyUI-GGUF ``GGMLTensor`` holding quantized blocks (its float types are plain tensors)."""
    return getattr(tensor, "tensor_type", None) is not None and hasattr(tensor, "tensor_shape")


def weight_shape(model, key: str) -> tuple[int, ...]:
    """The weight's logical shape (a GGUF tensor's storage is shaped by its blocks)."""
    tensor = stored_weight(model, key)
    return tuple(getattr(tensor, "tensor_shape", tensor.shape))


def weight_device(model, key: str) -> torch.device:
    return stored_weight(model, key).device


def weight_format(model, key: str) -> str:
    """How the weight is stored, for reports: ``float16``, ``scaled float8_e4m3fn``, ``GGUF Q8_0``, ..."""
    tensor = stored_weight(model, key)
    if _is_gguf(tensor):
        kind = tensor.tensor_type
        return f"GGUF {getattr(kind, 'name', kind)}"
    layout = getattr(tensor, "_layout_type", None)
    if layout is not None:
        return f"quantized {layout} ({str(getattr(tensor, '_qdata', tensor).dtype).removeprefix('torch.')})"
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"scaled {dtype}" if getattr(_layer(model, key), "scale_weight", None) is not None else dtype


def base_weight(model, key: str) -> torch.Tensor:
    """The weight as loaded (no patch), dequantized: a float32 copy on the weight's device, exactly what
    ComfyUI's patcher starts from when it applies patches to this layer."""
    tensor = stored_weight(model, key)
    if _is_gguf(tensor):
        layer = _layer(model, key)
        if not hasattr(layer, "get_weight"):
            raise ValueError(f"{key} holds GGUF blocks but its layer cannot dequantize them: load GGUF files with "
                             "ComfyUI-GGUF's Unet Loader (GGUF).")
        # ComfyUI-GGUF attaches a loaded clone's patches to the shared tensor; get_weight would apply them.
        attached = tensor.patches
        tensor.patches = []
        try:
            return torch.Tensor(layer.get_weight(tensor, torch.float32)).to(torch.float32)
        finally:
            tensor.patches = attached
    _, _, convert = comfy.model_patcher.get_key_weight(model.model, key)
    quantized = getattr(tensor, "_layout_type", None) is not None
    if not (tensor.is_floating_point() or quantized or convert is not None):
        # Packed integers (bitsandbytes NF4/int8, ...): their values are not the weights, and nothing here
        # knows the packing; reading them as numbers would corrupt the model without an error.
        raise ValueError(f"{key.removesuffix('.weight')} is stored as {str(tensor.dtype).removeprefix('torch.')} in a "
                         f"format this pack cannot read ({type(_layer(model, key)).__name__}). It reads fp32/fp16/"
                         "bf16, fp8 (plain or scaled), ComfyUI's mixed-precision layout and GGUF (ComfyUI-GGUF): load "
                         "the checkpoint in one of those.")
    weight = tensor.detach().to(torch.float32, copy=True)
    if convert is not None:
        weight = convert(weight, inplace=True)
    if hasattr(weight, "dequantize") and getattr(weight, "_layout_type", None) is not None:
        weight = weight.dequantize()
    return weight.to(torch.float32)


def effective_weight(model, key: str) -> torch.Tensor:
    """The weight as this MODEL would use it, in float32 on its device: :func:`base_weight` plus the patches
    already on the clone (so a LoRA placed before the eraser is erased too). Starts from the weight as
    loaded, so whatever is patched in on the device never leaks in."""
    weight = base_weight(model, key)
    if model.patches.get(key):
        weight = comfy.lora.calculate_weight(model.patches[key], weight, key)
    return weight
