"""A precision-independent fingerprint of a model's weights: is this the same checkpoint, at any precision?

An exact hash tells the checkpoint an erasure was computed on from every other file, but also from a
quantized copy of the same checkpoint (scaled fp8, GGUF Q8_0, ...), which computes with slightly different
weights. The fingerprint of a weight ``W`` ``[out, in]`` is ``H W G`` with fixed seeded Gaussian probes ``H``
``[8, out]`` and ``G`` ``[in, 8]``: 64 numbers whose relative difference between two weights estimates
``‖W_a − W_b‖_F / ‖W_b‖_F`` (quantization: 0.5 % for Q8_0, 3 % for fp8 e4m3, 5 % for e5m2, 8 % for Q4_K;
another checkpoint: of the order of 100 %, a fine-tune of the same base: anything in between).
"""
from __future__ import annotations

import torch

PROBES = 8
# The largest relative difference "the same checkpoint at another precision" accepts: above every
# quantization ComfyUI and ComfyUI-GGUF load (Q4_K about 8 %), with room for the estimate's spread.
SAME_CHECKPOINT_TOLERANCE = 0.25


def _probes(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(out_features * 1_000_003 + in_features)
    left = torch.randn(PROBES, out_features, generator=generator, dtype=torch.float64)
    right = torch.randn(in_features, PROBES, generator=generator, dtype=torch.float64)
    return left, right


def weight_fingerprint(weight: torch.Tensor) -> torch.Tensor:
    """``H W G`` (``[PROBES, PROBES]``, float32, on the CPU) of a 2-D weight, or of a bias as a one-column one."""
    if weight.ndim == 1:
        weight = weight[:, None]
    if weight.ndim != 2:
        raise ValueError(f"A fingerprint is taken of 2-D weights and 1-D biases (got shape {tuple(weight.shape)}).")
    left, right = _probes(*weight.shape)
    read = weight.detach().to(torch.float64)
    return (left.to(read.device) @ read @ right.to(read.device)).to("cpu", torch.float32)


def relative_differences(found: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per layer, ``‖found − expected‖ / ‖expected‖`` of two stacks of fingerprints ``[layers, PROBES, PROBES]``."""
    if found.shape != expected.shape:
        raise ValueError(f"fingerprints of shape {tuple(found.shape)} and {tuple(expected.shape)} do not compare.")
    difference = (found.double() - expected.double()).flatten(1).norm(dim=1)
    return difference / expected.double().flatten(1).norm(dim=1).clamp_min(1e-30)
