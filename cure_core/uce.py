"""UCE (Gandikota et al., "Unified Concept Editing in Diffusion Models", WACV 2024), the closed-form
baseline the benchmark compares CURE with.

UCE solves, for every layer ``W`` that reads text embeddings,

    min_W'  Σ_i ‖W' c_i − W c*_i‖² + s_p Σ_j ‖W' p_j − W p_j‖² + λ ‖W' − W‖²_F

(``c_i`` forget embeddings, ``c*_i`` the embeddings they should behave like, ``p_j`` preserved
ones), whose solution is ``W' = W (λI + s_e Σ c*_i c_iᵀ + s_p Σ p_j p_jᵀ)(λI + s_e Σ c_i c_iᵀ + s_p Σ p_j p_jᵀ)⁻¹``.
Writing ``A`` for the right-hand matrix, ``W' = W (I + s_e (C* − C) Cᵀ A⁻¹)``: a rank-``n`` update
with the same two-factor form as CURE's, so it travels through the same patch mechanism.
"""
from __future__ import annotations

import torch

from .spectral import LowRankEraser, _check_embeddings


def uce_eraser(forget: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor | None = None,
               lamb: float = 0.5, erase_scale: float = 1.0, preserve_scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """UCE's update as factors: ``ΔW = −W left right`` with ``left = s_e (C − C*)`` and ``right = Cᵀ A⁻¹``.

    ``forget`` and ``targets`` are ``[n, d]`` (row ``i`` of ``targets`` is where row ``i`` of
    ``forget`` should land, e.g. the embedding of an empty or guide prompt); ``preserve`` is
    ``[m, d]``. Solved in float64.
    """
    forget = _check_embeddings(forget, "forget").double()
    targets = _check_embeddings(targets, "target").double()
    if targets.shape != forget.shape:
        raise ValueError(f"UCE needs one target row per forget row: got {tuple(targets.shape)} targets for "
                         f"{tuple(forget.shape)} forget rows.")
    if lamb <= 0:
        raise ValueError(f"lamb must be > 0 (it keeps the system invertible), got {lamb}.")
    dim = forget.shape[1]
    gram = lamb * torch.eye(dim, dtype=torch.float64, device=forget.device) + erase_scale * forget.T @ forget
    if preserve is not None:
        preserve = _check_embeddings(preserve, "preserve").double().to(forget.device)
        gram = gram + preserve_scale * preserve.T @ preserve
    right = torch.linalg.solve(gram, forget.T).T                        # Cᵀ A⁻¹ (A is symmetric)
    left = erase_scale * (forget - targets).T
    return LowRankEraser(left.to(dtype), right.to(dtype))
