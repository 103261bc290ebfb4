"""CURE's Spectral Eraser (Biswas, Roy, Roy 2025, arXiv 2505.12677) in closed form.

Rows of every embedding matrix are embeddings (shape ``[n, d]``). The paper writes
``E = U Σ Vᵀ`` with embeddings as columns; the left singular vectors ``U`` of that
``d × n`` matrix are what this module calls the *basis* of a set of embeddings.

The operator applied to every weight ``W`` that reads text embeddings is
``W' = W (I − P_dis)`` with ``P_dis = P_f − P_f P_r``. Because ``P_f = U_f G U_fᵀ``,
``P_dis = (U_f G)(U_fᵀ (I − P_r))`` has rank at most ``rank(E_f)`` and the edit is
stored as two thin factors (:class:`LowRankEraser`), never as a dense ``d × d`` matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Components whose energy share is below this are numerically zero: they come from
# duplicate or linearly dependent embeddings and would only add noise directions.
RELATIVE_ENERGY_CUTOFF = 1e-10
# Components whose expanded share (their gain in the projector) is below this are left out of it: scaling a
# direction by 1 − 0.001 changes a weight by less than half precision resolves (fp16 keeps about three
# significant digits), and leaving them out keeps the edit's rank at the concept's strong directions instead
# of one per row (a concept contribution over 77 padded rows has dozens of directions with a tiny share).
MIN_GAIN = 1e-3


def expansion(energy: torch.Tensor, alpha: float) -> torch.Tensor:
    """The expansion function ``f(r; α) = α r / ((α − 1) r + 1)`` applied elementwise.

    ``α = 1`` returns the energy shares unchanged; as ``α → ∞`` every non-zero share
    tends to 1, so the projector tends to a hard projector onto the whole span.
    """
    check_alpha(alpha, "alpha")
    energy = torch.as_tensor(energy)
    return alpha * energy / ((alpha - 1.0) * energy + 1.0)


def check_alpha(alpha: float, name: str) -> None:
    """α below 1 would shrink energy instead of expanding it; NaN/inf make no operator."""
    if not isinstance(alpha, (int, float)) or not (1.0 <= float(alpha) < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 1 (got {alpha!r}); "
                         "1 keeps the raw energy shares, larger values erase more strongly.")


def _check_embeddings(embeddings: torch.Tensor, name: str) -> torch.Tensor:
    if embeddings.ndim != 2:
        raise ValueError(f"{name} embeddings must be a matrix [n, d] with one embedding per row "
                         f"(got shape {tuple(embeddings.shape)}).")
    if embeddings.shape[0] == 0:
        raise ValueError(f"{name} embeddings are empty: give at least one embedding.")
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{name} embeddings contain NaN or inf: the text encoder output is broken "
                         "(check the CLIP model and its dtype).")
    return embeddings


def spectral_basis(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis ``U [d, k]`` of the span of the rows and their energy shares ``r [k]``.

    The thin SVD is taken through the eigendecomposition of the small Gram matrix
    (``n × n`` when ``n ≤ d``, else ``d × d``) in float64: on a GPU that is much faster
    than an SVD of a tall thin matrix, and float64 keeps the small directions exact.
    Numerically null directions (duplicates, dependent rows) are dropped.
    """
    e = _check_embeddings(embeddings, "input").to(torch.float64)
    n, d = e.shape
    if n <= d:
        eigenvalues, vectors = torch.linalg.eigh(e @ e.T)          # vectors: right singular vectors
        total = eigenvalues.clamp_min(0).sum()
        keep = eigenvalues > RELATIVE_ENERGY_CUTOFF * total
        sigma = eigenvalues[keep].sqrt()
        basis = (e.T @ vectors[:, keep]) / sigma                  # u_i = Eᵀ v_i / σ_i
    else:
        eigenvalues, vectors = torch.linalg.eigh(e.T @ e)
        total = eigenvalues.clamp_min(0).sum()
        keep = eigenvalues > RELATIVE_ENERGY_CUTOFF * total
        basis = vectors[:, keep]
    if total <= 0:
        raise ValueError("All embeddings are zero: there is no concept direction to erase.")
    energy = eigenvalues[keep] / total
    order = torch.argsort(energy, descending=True)
    return basis[:, order], energy[order]


def expanded_basis(embeddings: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U, r, f(r; α))`` of :func:`spectral_basis`, without the components whose gain is below ``MIN_GAIN``."""
    basis, energy = spectral_basis(embeddings)
    gains = expansion(energy, alpha)
    keep = gains >= min(MIN_GAIN, float(gains.max()))          # the strongest component always stays
    return basis[:, keep], energy[keep], gains[keep]


def energy_projector(embeddings: torch.Tensor, alpha: float) -> torch.Tensor:
    """``P = U diag(f(r; α)) Uᵀ`` for one set of embeddings, as a dense ``d × d`` float64 matrix."""
    basis, _, gains = expanded_basis(embeddings, alpha)
    return (basis * gains) @ basis.T


@dataclass(frozen=True)
class LowRankEraser:
    """``P_dis = left @ right`` with ``left = U_f G`` (``[d, k]``) and ``right = U_fᵀ (I − P_r)`` (``[k, d]``).

    ``energy`` holds the forget set's energy shares and ``gains`` the expanded ones
    (``G = diag(gains)``); ``retain_energy`` and ``retain_gains`` the same for the retain set
    (``None`` without one). They are kept for reports and plots; all four are ``None`` for a
    baseline whose factors are not spectral (UCE, :mod:`.uce`).
    """
    left: torch.Tensor
    right: torch.Tensor
    energy: torch.Tensor | None = None
    gains: torch.Tensor | None = None
    retain_energy: torch.Tensor | None = None
    retain_gains: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    @property
    def dim(self) -> int:
        return self.left.shape[0]

    def dense(self) -> torch.Tensor:
        """The ``d × d`` matrix ``P_dis``."""
        return self.left @ self.right

    def weight_update(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LoRA-style factors ``(up, down)`` with ``up @ down = −W P_dis``, so ``W + up @ down = W (I − P_dis)``.

        ``weight`` is ``[out, d]``; ``up`` is ``[out, k]`` and ``down`` (shared by every layer
        reading the same embeddings) is ``[k, d]``. Computed in the eraser's dtype on the
        weight's device.
        """
        if weight.ndim != 2 or weight.shape[1] != self.dim:
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not read {self.dim}-wide embeddings.")
        up = -(weight.to(device=self.left.device, dtype=self.left.dtype) @ self.left)
        # NaN/inf anywhere in W reaches W @ left (NaN·0 and inf·0 are NaN): checking the thin product
        # is as strict as checking W and costs k/out of it.
        if not torch.isfinite(up).all():
            raise ValueError("weight contains NaN or inf: the model's weights are broken, nothing was edited.")
        return up, self.right


def low_rank_eraser(forget: torch.Tensor, retain: torch.Tensor | None = None,
                    alpha_forget: float = 2.0, alpha_retain: float = 2.0,
                    dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """Factorised discriminative projector for the forget and (optional) retain embeddings."""
    check_alpha(alpha_forget, "alpha_forget")
    check_alpha(alpha_retain, "alpha_retain")
    basis_f, energy_f, gains = expanded_basis(forget, alpha_forget)
    right = basis_f.T.clone()
    energy_r = gains_r = None
    if retain is not None:
        if retain.shape[-1] != forget.shape[-1]:
            raise ValueError(f"forget embeddings are {forget.shape[-1]}-wide but retain embeddings are "
                             f"{retain.shape[-1]}-wide: encode both with the same text encoder.")
        basis_r, energy_r, gains_r = expanded_basis(retain, alpha_retain)
        # U_fᵀ (I − P_r) = U_fᵀ − (U_fᵀ U_r) diag(f(r_r)) U_rᵀ, without forming any d × d matrix.
        right = right - ((basis_f.T @ basis_r) * gains_r) @ basis_r.T
    left = basis_f * gains
    if retain is not None:
        _check_retain_leaves_something(gains, right)
    retain_spectrum = (None, None) if energy_r is None else (energy_r.to(dtype), gains_r.to(dtype))
    return LowRankEraser(left.to(dtype), right.to(dtype), energy_f.to(dtype), gains.to(dtype), *retain_spectrum)


# Below this share of the forget-only erasure, the retain set has cancelled the edit.
MIN_SURVIVING_ERASURE = 0.01


def _check_retain_leaves_something(gains: torch.Tensor, right: torch.Tensor) -> None:
    """Refuse a retain set that swallows the forget set (the edit would silently do nothing).

    Compares the strongest erasure in any direction, ``‖P_dis‖₂ = ‖G U_fᵀ(I − P_r)‖₂`` (``U_f`` is
    orthonormal), with the strongest erasure without the retain set, ``‖P_f‖₂ = max(G)``.
    """
    scaled = gains[:, None] * right
    strongest = torch.linalg.eigvalsh(scaled @ scaled.T).max().clamp_min(0).sqrt()
    share = float(strongest / gains.max())
    if share < MIN_SURVIVING_ERASURE:
        raise ValueError(
            f"The retain concepts cover the forget concepts: the strongest erasure left is {share:.2%} of what "
            "it would be without them. Remove the forget concepts (or their close synonyms) from the retain "
            "list, or lower alpha_retain.")


def discriminative_projector(forget: torch.Tensor, retain: torch.Tensor | None = None,
                             alpha_forget: float = 2.0, alpha_retain: float = 2.0) -> torch.Tensor:
    """``P_dis = P_f − P_f P_r`` (``P_f`` alone when ``retain`` is None), as a dense ``d × d`` matrix.

    Written exactly as the paper's equations, in float64, for checking and small
    problems; patching uses :func:`low_rank_eraser`, which gives the same operator.
    """
    p_forget = energy_projector(forget, alpha_forget)
    if retain is None:
        return p_forget
    if retain.shape[-1] != forget.shape[-1]:
        raise ValueError(f"forget embeddings are {forget.shape[-1]}-wide but retain embeddings are "
                         f"{retain.shape[-1]}-wide: encode both with the same text encoder.")
    p_retain = energy_projector(retain, alpha_retain)
    return p_forget - p_forget @ p_retain
