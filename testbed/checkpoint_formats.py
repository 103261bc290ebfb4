"""Diffusion-model files in the formats users load, written from a tiny model's weights for the tests.

- scaled fp8 (ComfyUI's ``*_fp8_scaled`` files): fp8 linear weights with a per-layer ``scale_weight`` and the
  ``scaled_fp8`` marker tensor;
- ComfyUI's mixed-precision layout: fp8 linear weights with ``weight_scale``, listed in the safetensors
  metadata ``_quantization_metadata`` (read by ``comfy/model_detection.py``, dequantized by ``comfy/quant_ops.py``);
- GGUF (read by ComfyUI-GGUF): linear weights as Q8_0 blocks (``gguf``'s own quantizer) or Q4_K blocks
  (the quantizer below: ``gguf`` only dequantizes K-quants), everything else F16/F32.

Plain fp8 needs no file of its own: the loader's ``weight_dtype`` stores any file's weights as fp8.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


def _linear_weights(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The 2-D ``.weight`` tensors: the linear layers, which the quantized formats store quantized."""
    return [k for k, v in state_dict.items() if k.endswith(".weight") and v.ndim == 2]


def _fp8_scaled(weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fp8(W / s), s)`` with the per-tensor scale ``s = max|W| / fp8 max`` both layouts use."""
    scale = weight.float().abs().max() / FP8_MAX[dtype]
    return (weight.float() / scale).to(dtype), scale.reshape(())


def scaled_fp8(state_dict: dict[str, torch.Tensor], dtype: torch.dtype = torch.float8_e4m3fn,
               prefix: str = "") -> dict[str, torch.Tensor]:
    """The scaled-fp8 layout: every linear weight under ``prefix`` (``model.diffusion_model.`` in an all-in-one
    checkpoint) as ``fp8(W / s)`` with ``scale_weight = s = max|W| / fp8 max``, and the marker."""
    out = dict(state_dict)
    for key in (k for k in _linear_weights(state_dict) if k.startswith(prefix)):
        out[key], out[key.removesuffix("weight") + "scale_weight"] = _fp8_scaled(state_dict[key], dtype)
    out[prefix + "scaled_fp8"] = torch.empty(0, dtype=dtype)
    return out


def mixed_precision(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of ComfyUI's mixed-precision layout: every linear weight fp8 e4m3fn with a
    ``weight_scale``, the layers named in ``_quantization_metadata``."""
    out = dict(state_dict)
    layers = {}
    for key in _linear_weights(state_dict):
        out[key], out[key.removesuffix("weight") + "weight_scale"] = _fp8_scaled(state_dict[key], torch.float8_e4m3fn)
        layers[key.removesuffix(".weight")] = {"format": "float8_e4m3fn"}
    return out, {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})}


# ---- GGUF ------------------------------------------------------------------------------------------

def _q4_k_blocks(weight: np.ndarray) -> np.ndarray:
    """``weight`` (rows a multiple of 256 long) as Q4_K blocks, ``[rows, row_length / 256 * 144]`` bytes.

    Per block of 256: fp16 ``d`` and ``dmin``, eight 6-bit sub-block scales and mins packed in 12 bytes, and
    256 4-bit values; an element is ``d · scale_j · q − dmin · min_j`` (ggml's layout, which ``gguf``
    dequantizes). A plain min/max fit per sub-block of 32: not llama.cpp's search, but valid blocks.
    """
    rows, length = weight.shape
    x = weight.astype(np.float32).reshape(-1, 8, 32)                     # [blocks, sub-blocks, 32]
    low = np.minimum(x.min(axis=2), 0.0)
    scale = (x.max(axis=2) - low) / 15.0
    d = scale.max(axis=1) / 63.0
    dmin = (-low).max(axis=1) / 63.0
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    d, dmin = d16.astype(np.float32), dmin16.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.clip(np.nan_to_num(np.round(scale / d[:, None])), 0, 63).astype(np.uint8)
        mn = np.clip(np.nan_to_num(np.round(-low / dmin[:, None])), 0, 63).astype(np.uint8)
        step = (d[:, None] * sc)[:, :, None]
        q = np.nan_to_num(np.round((x + (dmin[:, None] * mn)[:, :, None]) / step))
    q = np.clip(q, 0, 15).astype(np.uint8).reshape(-1, 4, 2, 32)          # [blocks, pairs of sub-blocks, 2, 32]
    scales = np.empty((x.shape[0], 12), dtype=np.uint8)
    scales[:, :4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    scales[:, 8:] = (sc[:, 4:] & 0xF) | ((mn[:, 4:] & 0xF) << 4)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d16[:, None].view(np.uint8), dmin16[:, None].view(np.uint8), scales, qs], axis=1)
    return blocks.reshape(rows, length // 256 * 144)


def write_gguf(path: str | Path, state_dict: dict[str, torch.Tensor], arch: str, quant: str = "Q8_0") -> Path:
    """A GGUF file of ``state_dict`` as ComfyUI-GGUF reads it (``general.architecture`` = ``arch``, e.g. ``sd1``,
    ``wan``): linear weights whose rows fit the block size as ``quant`` (``Q8_0`` or ``Q4_K``), other
    tensors F16 (1-D ones F32)."""
    import gguf
    qtype = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type("diffusion")              # ComfyUI-GGUF's converter writes the model kind here
    linear = set(_linear_weights(state_dict))
    for key, value in state_dict.items():
        array = value.float().numpy()
        if key in linear and array.shape[1] % block == 0:
            data = _q4_k_blocks(array) if quant == "Q4_K" else gguf.quants.quantize(array, qtype)
            writer.add_tensor(key, data, raw_shape=data.shape, raw_dtype=qtype)
        elif array.ndim <= 1:
            writer.add_tensor(key, array.astype(np.float32))
        else:
            writer.add_tensor(key, array.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
