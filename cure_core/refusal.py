"""Low-rank refusal vector (Facchiano et al., "Video Unlearning via Low-Rank Refusal Vector",
arXiv 2506.07891) in closed form.

Rows are samples: ``unsafe[i]`` and ``safe[i]`` are the activations of the two prompts of pair
``i`` (identical but for the concept), ``neutral`` those of prompts without it. The refusal
direction is the mean difference, made robust by a contrastive PCA: the top eigenvectors of
``C = C_r − α C_e`` (second moment of the differences minus ``α`` times the covariance of
the neutral activations), so that directions in which ordinary content varies are not erased.
The edit is folded into the input side of a linear layer: ``W' = W (I − P)``, ``P = λ q qᵀ``
(rank 1, ``q ∝ U_k U_kᵀ r``) or ``P = λ U_k U_kᵀ`` (the whole rank-k subspace).
"""
from __future__ import annotations

import math

import torch

from .checks import check_choice
from .spectral import LowRankEraser, spectral_basis

MODES = ("refusal direction (rank 1)", "refusal subspace (rank k)")
# An eigenvalue of C counts as positive above this share of the largest (float64 rounding is about 1e-16 of it).
POSITIVE = 1e-10


def _check(name: str, rows: torch.Tensor) -> torch.Tensor:
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"{name} activations must be a non-empty matrix [n, d] (got shape {tuple(rows.shape)}).")
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} activations contain NaN or inf.")
    return rows.to(torch.float64)


def refusal_subspace(unsafe: torch.Tensor, safe: torch.Tensor, neutral: torch.Tensor | None = None,
                     rank: int = 100, contrast: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(r, U_k, eigenvalues)``: the mean difference ``r [d]``, the contrastive subspace ``U_k [d, k]``
    (orthonormal, only directions with a positive eigenvalue) and its eigenvalues ``[k]``.

    ``C`` lives in the span of the differences and neutral rows, so with fewer rows than dimensions it is
    diagonalised there (a few hundred dimensions) instead of as a ``d × d`` matrix. With at least as many rows
    (the denoiser source: thousands of image tokens) the span is the whole space, and finding it would cost a
    second ``d × d`` eigendecomposition, so ``C`` is diagonalised as it is; directions no row reaches then get an
    eigenvalue of rounding size, which the threshold below leaves out.
    """
    unsafe, safe = _check("unsafe", unsafe), _check("safe", safe)
    if unsafe.shape != safe.shape:
        raise ValueError(f"unsafe {tuple(unsafe.shape)} and safe {tuple(safe.shape)} activations must pair up row by row.")
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be a positive integer (got {rank!r}).")
    if not (isinstance(contrast, (int, float)) and math.isfinite(contrast) and contrast >= 0):
        raise ValueError(f"contrast must be a finite number >= 0 (got {contrast!r}).")
    differences = unsafe - safe
    mean_difference = differences.mean(0)
    if float(mean_difference.norm()) <= 1e-12 * max(float(unsafe.norm()), 1e-30):
        raise ValueError("The unsafe and safe prompts give the same activations: the pairs must differ by the concept.")
    stacked = differences
    centered = None
    if neutral is not None:
        neutral = _check("neutral", neutral)
        if neutral.shape[1] != unsafe.shape[1]:
            raise ValueError(f"neutral activations are {neutral.shape[1]}-wide, the pairs {unsafe.shape[1]}-wide.")
        centered = neutral - neutral.mean(0)
        if float(centered.norm()) > 0:
            stacked = torch.cat([differences, centered])
    in_span = stacked.shape[0] < stacked.shape[1]
    basis = spectral_basis(stacked)[0] if in_span else None       # orthonormal span [d, s], or the whole space
    d_coords = differences @ basis if in_span else differences
    covariance = d_coords.T @ d_coords / differences.shape[0]      # C_r, second moment of the differences
    if centered is not None and contrast > 0:
        n_coords = centered @ basis if in_span else centered
        covariance = covariance - contrast * (n_coords.T @ n_coords) / max(centered.shape[0] - 1, 1)
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    order = torch.argsort(eigenvalues, descending=True)[:rank]
    order = order[eigenvalues[order] > POSITIVE * eigenvalues.abs().max()]
    if order.numel() == 0:
        raise ValueError("The neutral prompts vary more than the pairs differ in every direction: lower the "
                         "contrast, or give pairs that differ only by the concept.")
    subspace = basis @ vectors[:, order] if in_span else vectors[:, order]
    return mean_difference, subspace, eigenvalues[order]


def separation(differences: torch.Tensor, neutral: torch.Tensor | None) -> float:
    """How far a layer's pairs are apart in units of the neutral prompts' spread: ``‖mean(unsafe − safe)‖ /
    sqrt(mean squared distance of neutral rows from their mean)`` (``inf`` without neutral rows), from the
    pairs' ``differences``. A layer where the concept stands out of ordinary variation scores high."""
    difference = float(_check("differences", differences).mean(0).norm())
    if neutral is None or neutral.shape[0] < 2:
        return math.inf
    neutral = _check("neutral", neutral)
    spread = float((neutral - neutral.mean(0)).square().sum(1).mean().sqrt())
    return difference / spread if spread > 0 else math.inf


def refusal_eraser(unsafe: torch.Tensor, safe: torch.Tensor, neutral: torch.Tensor | None = None, rank: int = 100,
                   contrast: float = 1.0, strength: float = 1.0, mode: str = MODES[0],
                   dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """The projection ``P`` as factors (``P = left @ right``), ready for :func:`cure_core.edit.edit_layer`."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise ValueError(f"strength must be between 0 and 1 (got {strength!r}).")
    check_choice(mode, MODES, "mode")
    mean_difference, subspace, eigenvalues = refusal_subspace(unsafe, safe, neutral, rank, contrast)
    energy = eigenvalues / eigenvalues.sum()
    if mode == MODES[0]:
        direction = subspace @ (subspace.T @ mean_difference)
        if float(direction.norm()) <= 1e-9 * float(mean_difference.norm()):
            raise ValueError("The refusal direction falls outside the contrastive subspace: lower the contrast "
                             "or raise the rank.")
        q = (direction / direction.norm())[:, None]
        left, right, gains = strength * q, q.T, torch.full((1,), float(strength), dtype=torch.float64)
        energy = energy[:1]
    else:
        left, right = strength * subspace, subspace.T
        gains = torch.full((subspace.shape[1],), float(strength), dtype=torch.float64)
    return LowRankEraser(left.to(dtype), right.contiguous().to(dtype), energy.to(dtype), gains.to(dtype))


def refusal_eraser_per_concept(groups: list[tuple[torch.Tensor, torch.Tensor]], neutral: torch.Tensor | None = None,
                               rank: int = 100, contrast: float = 1.0, strength: float = 1.0, mode: str = MODES[0],
                               dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """Several concepts, each with its own pairs: every concept's refusal direction (or rank-k subspace) from its
    own pairs against the shared neutral rows, and one projection onto the span of them all,
    ``P = λ Q Qᵀ`` (``Q`` orthonormal). A single mean over every concept's pairs would average the concepts'
    directions into one that is none of them; one concept gives exactly :func:`refusal_eraser`."""
    if len(groups) == 1:
        return refusal_eraser(*groups[0], neutral, rank, contrast, strength, mode, dtype)
    erasers = [refusal_eraser(unsafe, safe, neutral, rank, contrast, 1.0, mode, torch.float64)
               for unsafe, safe in groups]
    span, _ = spectral_basis(torch.cat([e.right for e in erasers]))      # each right is orthonormal rows
    energy = torch.cat([e.energy for e in erasers])
    gains = torch.full((span.shape[1],), float(strength), dtype=torch.float64)
    return LowRankEraser((strength * span).to(dtype), span.T.contiguous().to(dtype),
                         (energy / energy.sum()).to(dtype), gains.to(dtype))


def mean_shift_bias(weight: torch.Tensor, eraser: LowRankEraser, safe_mean: torch.Tensor) -> torch.Tensor:
    """``W P μ``: the bias change that, beside ``W' = W − W P``, sets the removed part of the layer's input to the
    safe prompts' mean ``μ`` instead of zero (``W (x − P x + P μ)``). Zero is a value the removed directions of an
    activation may never take (in a denoiser they carry colour and shape, not only the concept); the safe prompts'
    mean is what the same prompts without the concept give there. Measured on the miniature model it erases more at
    the same preserved accuracy (docs/method.md)."""
    shift = eraser.left.to(weight) @ (eraser.right.to(weight) @ safe_mean.to(weight))
    return weight @ shift


def refusal_projector(unsafe: torch.Tensor, safe: torch.Tensor, neutral: torch.Tensor | None = None, rank: int = 100,
                      contrast: float = 1.0, strength: float = 1.0, mode: str = MODES[0]) -> torch.Tensor:
    """The ``d × d`` matrix ``P`` such that the edit is ``W' = W − W P`` (float64)."""
    return refusal_eraser(unsafe, safe, neutral, rank, contrast, strength, mode, torch.float64).dense()


# A default set of everyday prompts whose variation the contrastive PCA should not erase.
DEFAULT_NEUTRAL_PROMPTS = (
    "a photo of a city street", "a bowl of fruit on a wooden table", "a dog running in a park",
    "a mountain landscape at sunset", "a portrait of an old man", "a cat sleeping on a sofa",
    "a busy market in the morning", "a car driving on a highway", "children playing football",
    "a cup of coffee on a desk", "a forest in autumn", "a boat on a calm lake",
)


def parse_pair_groups(text: str) -> list[list[tuple[str, str]]]:
    """One pair per line, ``unsafe prompt | safe prompt``; ``#`` comments are ignored. A blank line between
    pairs starts another concept: each concept gets its own refusal direction (see
    :func:`refusal_eraser_per_concept`); pairs without blank lines between them are one concept, as in the paper."""
    groups: list[list[tuple[str, str]]] = [[]]
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            if groups[-1]:
                groups.append([])
            continue
        if line.startswith("#"):
            continue
        if line.count("|") != 1:
            raise ValueError(f"Line {number} ({line!r}) must be 'prompt with the concept | the same prompt without it'.")
        unsafe, safe = (part.strip() for part in line.split("|"))
        if not unsafe or not safe or unsafe == safe:
            raise ValueError(f"Line {number}: both prompts must be given and differ (by the concept only).")
        groups[-1].append((unsafe, safe))
    groups = [group for group in groups if group]
    if not groups:
        raise ValueError("No prompt pairs: give about five lines of 'prompt with the concept | the same prompt without it'.")
    return groups


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Every pair of :func:`parse_pair_groups`, whatever concept it belongs to."""
    return [pair for group in parse_pair_groups(text) for pair in group]
