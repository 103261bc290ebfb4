"""CURE's Spectral Eraser (Biswas, Roy, Roy 2025, arXiv 2505.12677) in closed form.

Rows of every embedding matrix are embeddings (shape ``[n, d]``). The paper writes
``E = U Σ Vᵀ`` with embeddings as columns; the left singular vectors ``U`` of that
``d × n`` matrix are what this module calls the *basis* of a set of embeddings.

The operator applied to every weight ``W`` that reads text embeddings is
``W' = W (I − P_dis)`` with ``P_dis = P_f − P_f P_r``. Because ``P_f = U_f G U_fᵀ``,
``P_dis = (U_f G)(U_fᵀ (I − P_r))`` has rank at most ``rank(E_f)`` and the edit is
stored as two thin factors (:class:`LowRankEraser`), never as a dense ``d × d`` matrix.

Several concepts: the paper's form takes one spectrum over all their rows (:func:`low_rank_eraser`),
which dilutes each concept's energy shares. :func:`joint_eraser` keeps a spectrum per concept and
combines them once: CURE's expansion multiplies a component's odds, ``f/(1 − f) = α r/(1 − r)``, and
``P = M_f (M_f + M_r + I)⁻¹`` with ``M = Σ_concepts U diag(odds) Uᵀ`` is the least-squares operator
that removes every forget concept's components and keeps every retain concept's at those odds (the
ridge solution of ``min ‖(I − P) F‖² + ‖P R‖² + ‖P‖²``, ``F Fᵀ = M_f``, ``R Rᵀ = M_r``). One concept
without a retain set gives exactly the paper's ``P_f``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_choice

# Components whose energy share is below this are numerically zero: they come from
# duplicate or linearly dependent embeddings and would only add noise directions.
RELATIVE_ENERGY_CUTOFF = 1e-10
# Components whose expanded share (their gain in the projector) is below this are left out of it: scaling a
# direction by 1 − 0.001 changes a weight by less than half precision resolves (fp16 keeps about three
# significant digits), and leaving them out keeps the edit's rank at the concept's strong directions instead
# of one per row (a concept contribution over 77 padded rows has dozens of directions with a tiny share).
MIN_GAIN = 1e-3
# Rows whose pairwise cosines are all below this are taken as orthogonal (their own singular vectors): a spectral
# factor stored in float32 is orthogonal to about 1e-7, and treating rows at this cosine as orthogonal moves the
# projector by about as much, far below what MIN_GAIN leaves out. Independent rows of a real encoder are far above it.
ORTHOGONAL_ROWS = 1e-5


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


def _orthogonal(gram: torch.Tensor) -> bool:
    """Whether rows with this Gram matrix are orthogonal (every pairwise cosine at most ``ORTHOGONAL_ROWS``)."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    cosines = gram / (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(gram.dtype).tiny)
    return bool((cosines - torch.diag_embed(cosines.diagonal())).abs().max() <= ORTHOGONAL_ROWS)


def _spectrum(e: torch.Tensor, gram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`spectral_basis` of checked float64 rows ``e`` (``gram = e eᵀ`` when already computed), with the
    rows' total energy."""
    n, d = e.shape
    if n <= d:
        gram = e @ e.T if gram is None else gram
        if _orthogonal(gram):
            eigenvalues, vectors = gram.diagonal(), None
        else:
            eigenvalues, vectors = torch.linalg.eigh(gram)          # vectors: right singular vectors
        total = eigenvalues.clamp_min(0).sum()
        keep = eigenvalues > RELATIVE_ENERGY_CUTOFF * total
        sigma = eigenvalues[keep].sqrt()
        basis = (e[keep].T if vectors is None else e.T @ vectors[:, keep]) / sigma    # u_i = Eᵀ v_i / σ_i
    else:
        eigenvalues, vectors = torch.linalg.eigh(e.T @ e)
        total = eigenvalues.clamp_min(0).sum()
        keep = eigenvalues > RELATIVE_ENERGY_CUTOFF * total
        basis = vectors[:, keep]
    if total <= 0:
        raise ValueError("All embeddings are zero: there is no concept direction to erase.")
    energy = eigenvalues[keep] / total
    order = torch.argsort(energy, descending=True)
    return basis[:, order], energy[order], total


def spectral_basis(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis ``U [d, k]`` of the span of the rows and their energy shares ``r [k]``.

    The thin SVD is taken through the eigendecomposition of the small Gram matrix
    (``n × n`` when ``n ≤ d``, else ``d × d``) in float64: on a GPU that is much faster
    than an SVD of a tall thin matrix, and float64 keeps the small directions exact.
    Rows that are already orthogonal (a stored :func:`spectral_factor`, as the erase node keeps every
    concept's rows) are their own singular vectors: their Gram matrix is diagonal and is not decomposed.
    Numerically null directions (duplicates, dependent rows) are dropped.
    """
    basis, energy, _ = _spectrum(_check_embeddings(embeddings, "input").to(torch.float64))
    return basis, energy


def principal_rows(rows: torch.Tensor, min_share: float = 0.0, energy: float = 1.0) -> torch.Tensor:
    """Rows ``B`` (``[k, d]``, ``k ≤ n``) with ``BᵀB = EᵀE`` restricted to the strongest principal components of
    ``rows``: those whose energy share is at least ``min_share``, until they hold ``energy`` of the total (the
    strongest always). Everything built from a set of rows here (spectra, projectors, the report's figures)
    depends on them only through ``EᵀE``, so ``B`` stands in for them.

    When every component of independent rows reaches ``min_share`` (``EEᵀ − min_share·tr(EEᵀ)·I`` has a Cholesky
    factor) nothing would be left out and the rows are returned as they are: a random-weight encoder's rows are
    full rank, and their eigendecomposition would cost most of a long list's edit. That test reads the rows in
    their own precision: a wrong answer either way only keeps rows that could have been compacted or decomposes
    them, both exact."""
    e = _check_embeddings(rows, "input")
    if e.shape[0] <= e.shape[1] and min_share > 0 and energy >= 1.0:
        gram = e @ e.T
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        if int(torch.linalg.cholesky_ex(gram - min_share * gram.trace() * eye).info) == 0:
            return rows
    e = e.to(torch.float64)
    basis, shares, total = _spectrum(e)
    keep = int((shares >= min_share).sum())
    if energy < 1.0:
        needed = torch.searchsorted(torch.cumsum(shares, 0), torch.tensor(energy, dtype=shares.dtype)).item() + 1
        keep = min(keep, int(needed))
    keep = max(1, min(keep, shares.numel()))
    return ((shares[:keep] * total).sqrt()[:, None] * basis[:, :keep].T).to(rows.dtype)


# The largest α the node's inputs take: a component whose gain cannot reach MIN_GAIN at it never enters a projector.
MAX_NODE_ALPHA = 1000.0


def smallest_useful_share(alpha: float = MAX_NODE_ALPHA) -> float:
    """The smallest energy share whose gain ``f(r; α)`` reaches ``MIN_GAIN`` (1.0e-6 at α = 1000)."""
    return MIN_GAIN / (alpha - (alpha - 1.0) * MIN_GAIN)


def spectral_factor(rows: torch.Tensor, alpha: float = MAX_NODE_ALPHA) -> torch.Tensor:
    """A concept's rows reduced to its principal components that can still reach the gain cutoff at any α up to
    ``max(alpha, MAX_NODE_ALPHA)`` (:func:`principal_rows`): what an erasure stores instead of every padded row.
    Within one spectrum over several concepts a component's share is never larger than within its own concept,
    so the paper's combination loses nothing either."""
    return principal_rows(rows, min_share=smallest_useful_share(max(alpha, MAX_NODE_ALPHA)))


def expanded_basis(embeddings: torch.Tensor, alpha: float,
                   min_gain: float = MIN_GAIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U, r, f(r; α))`` of :func:`spectral_basis`, without the components whose gain is below ``min_gain``."""
    basis, energy = spectral_basis(embeddings)
    gains = expansion(energy, alpha)
    keep = gains >= min(min_gain, float(gains.max()))          # the strongest component always stays
    return basis[:, keep], energy[keep], gains[keep]


def energy_projector(embeddings: torch.Tensor, alpha: float, min_gain: float = 0.0) -> torch.Tensor:
    """``P = U diag(f(r; α)) Uᵀ`` for one set of embeddings, as a dense ``d × d`` float64 matrix (components whose
    gain is below ``min_gain`` left out; by default none is)."""
    basis, _, gains = expanded_basis(embeddings, alpha, min_gain)
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
    _refuse_if_cancelled(float(strongest / gains.max()))


def _refuse_if_cancelled(share: float) -> None:
    if share < MIN_SURVIVING_ERASURE:
        raise ValueError(
            f"The retain concepts cover the forget concepts: the strongest erasure left is {share:.2%} of what "
            "it would be without them. Remove the forget concepts (or their close synonyms) from the retain "
            "list, or lower alpha_retain.")


def discriminative_projector(forget: torch.Tensor, retain: torch.Tensor | None = None,
                             alpha_forget: float = 2.0, alpha_retain: float = 2.0,
                             min_gain: float = 0.0) -> torch.Tensor:
    """``P_dis = P_f − P_f P_r`` (``P_f`` alone when ``retain`` is None), as a dense ``d × d`` matrix.

    The paper's equations exactly, in float64, for checking and small problems. With ``min_gain``
    (0 by default) the components whose gain is below it are left out, as :func:`low_rank_eraser`
    (``MIN_GAIN``) leaves them out where the edit is built: the two then give the same operator.
    """
    p_forget = energy_projector(forget, alpha_forget, min_gain)
    if retain is None:
        return p_forget
    if retain.shape[-1] != forget.shape[-1]:
        raise ValueError(f"forget embeddings are {forget.shape[-1]}-wide but retain embeddings are "
                         f"{retain.shape[-1]}-wide: encode both with the same text encoder.")
    p_retain = energy_projector(retain, alpha_retain, min_gain)
    return p_forget - p_forget @ p_retain


# The largest odds a component gets: a gain of 1 (a concept with a single direction) would be infinite odds;
# 1e6 keeps its gain at 1 − 1e-6 (nothing a weight in any precision can tell from 1) and the k × k system
# well conditioned.
MAX_ODDS = 1e6
# How the forget concepts' spectra are combined (the node's "combination" input).
PER_CONCEPT = "per concept (joint)"
ONE_SPECTRUM = "one spectrum (paper)"
COMBINATIONS = (PER_CONCEPT, ONE_SPECTRUM)


def split_rows(rows: torch.Tensor, counts: tuple[int, ...] | list[int]) -> list[torch.Tensor]:
    """The row blocks of a concept set stored concept after concept (``counts[i]`` rows for concept ``i``)."""
    if sum(counts) != rows.shape[0]:
        raise ValueError(f"{len(counts)} concepts with {sum(counts)} rows do not describe {rows.shape[0]} rows.")
    return [block for block in torch.split(rows, list(counts)) if block.shape[0]]


def _odds(gains: torch.Tensor) -> torch.Tensor:
    """Each component's odds ``f/(1 − f)``, capped at ``MAX_ODDS``."""
    return (gains / (1.0 - gains).clamp_min(1.0 / MAX_ODDS)).clamp_max(MAX_ODDS)


def _odds_factor(sets: list[torch.Tensor], alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F = [U_c diag(√odds_c)]`` over the concepts ``c`` (``F Fᵀ = M``), with every concept's energy shares and
    gains (each relative to its own rows, strongest first)."""
    factors, energies, gains = [], [], []
    for rows in sets:
        basis, energy, gain = expanded_basis(rows, alpha)
        factors.append(basis * _odds(gain).sqrt())
        energies.append(energy)
        gains.append(gain)
    energy, gain = torch.cat(energies), torch.cat(gains)
    order = torch.argsort(gain, descending=True)
    return torch.cat(factors, dim=1), energy[order], gain[order]


def _odds_rows(rows: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, r)``: rows with ``XᵀX = U diag(odds) Uᵀ`` over every component of one concept (none left out) and the
    concept's energy shares, strongest first.

    With the rows scaled to unit energy (``E``, ``EᵀE = U diag(r) Uᵀ``) and odds ``α r/(1 − r)``,
    ``U diag(odds) Uᵀ = α Eᵀ(I − EEᵀ)⁻¹E``: ``X = √α L⁻¹E`` with ``LLᵀ = I − EEᵀ``, one Cholesky factorisation
    where the eigenvectors would cost three times as much (the shares, for the report, only need the eigenvalues).
    Orthogonal rows are their own basis; more rows than the width, or odds capped at ``MAX_ODDS`` (one direction
    holding nearly everything), take the eigenvectors."""
    e = _check_embeddings(rows, "input").to(torch.float64)
    n, d = e.shape
    gram = e @ e.T if n <= d else None
    if gram is not None and not _orthogonal(gram):
        total = gram.trace()
        unit_gram = gram / total
        shares = torch.linalg.eigvalsh(unit_gram).flip(0)
        shares = shares[shares > RELATIVE_ENERGY_CUTOFF]
        strongest = float(shares[0])
        if alpha * strongest < MAX_ODDS * (1.0 - strongest):
            lower = torch.linalg.cholesky(torch.eye(n, dtype=e.dtype, device=e.device) - unit_gram)
            return torch.linalg.solve_triangular(lower, e, upper=False) * (alpha / total).sqrt(), shares
    basis, shares, _ = _spectrum(e, gram)
    return (basis * _odds(expansion(shares, alpha)).sqrt()).T, shares


def _kept_spectrum(shares: list[torch.Tensor], alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every concept's shares and gains as :func:`expanded_basis` keeps them, strongest gain first (the report's)."""
    kept_shares, kept_gains = [], []
    for share in shares:
        gain = expansion(share, alpha)
        keep = gain >= min(MIN_GAIN, float(gain.max()))
        kept_shares.append(share[keep])
        kept_gains.append(gain[keep])
    share, gain = torch.cat(kept_shares), torch.cat(kept_gains)
    order = torch.argsort(gain, descending=True)
    return share[order], gain[order]


def _odds_matrix(sets: list[torch.Tensor], alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``M = Σ_c U_c diag(odds_c) U_cᵀ`` (``d × d``) over every component of every concept, with the shares and
    gains the report shows (:func:`_kept_spectrum`)."""
    odds, shares = None, []
    for rows in sets:        # summed concept by concept: a long list's rows are never stacked (hundreds of MB)
        x, share = _odds_rows(rows, alpha)
        odds = x.T @ x if odds is None else odds.addmm_(x.T, x)
        shares.append(share)
    return odds, *_kept_spectrum(shares, alpha)


def joint_eraser(forget_sets: list[torch.Tensor], retain_sets: list[torch.Tensor] | None = None,
                 alpha_forget: float = 2.0, alpha_retain: float = 2.0,
                 dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """Every forget concept erased with its own spectrum, every retain concept kept with its own, in one edit.

    ``forget_sets`` and ``retain_sets`` hold one ``[n_c, d]`` matrix of rows per concept. With
    ``F = [U_c diag(√odds_c)]`` over the forget concepts and ``C = [F, R]`` with the retain concepts'
    factor ``R``, ``P = F Fᵀ (I + C Cᵀ)⁻¹ = F (Fᵀ − Fᵀ C (I + CᵀC)⁻¹ Cᵀ)`` (Woodbury): the factors are
    ``left = F`` and ``right = Fᵀ − (FᵀC)(I + CᵀC)⁻¹Cᵀ``, and only ``k × k`` systems are solved (``k``: the
    kept components of all the concepts). When the concepts' rows could hold more components than the width
    ``d`` (long lists), ``M_f`` and ``M_r`` are summed as ``d × d`` matrices instead (:func:`_odds_rows`: every
    component, none left out) and the operator's own directions below ``MIN_GAIN`` are dropped at the end.
    The combination is computed once: no concept's edit acts on another's output, and orthogonal concepts do
    not interact at all.
    """
    check_alpha(alpha_forget, "alpha_forget")
    check_alpha(alpha_retain, "alpha_retain")
    if not forget_sets:
        raise ValueError("forget embeddings are empty: give at least one concept.")
    width = forget_sets[0].shape[-1]
    for rows in [*forget_sets, *(retain_sets or [])]:
        if rows.ndim == 2 and rows.shape[-1] != width:
            raise ValueError(f"forget embeddings are {width}-wide but other embeddings are {rows.shape[-1]}-wide: "
                             "encode every concept with the same text encoder.")
    energy_r = gains_r = None
    if sum(min(rows.shape[0], width) for rows in [*forget_sets, *(retain_sets or [])]) <= width:
        # k × k system (Woodbury): a few components per concept
        forget_factor, energy_f, gains_f = _odds_factor(forget_sets, alpha_forget)
        combined = forget_factor
        if retain_sets:
            retain_factor, energy_r, gains_r = _odds_factor(retain_sets, alpha_retain)
            combined = torch.cat([forget_factor, retain_factor], dim=1)
        system = torch.eye(combined.shape[1], dtype=combined.dtype, device=combined.device) + combined.T @ combined
        right = forget_factor.T - (forget_factor.T @ combined) @ torch.linalg.solve(system, combined.T)
        left, right = _minimal_factors(forget_factor, right)
        strongest = torch.linalg.matrix_norm(right, ord=2)            # ‖P‖₂: left is orthonormal
        largest = torch.linalg.matrix_norm(forget_factor, ord=2) ** 2  # ‖M_f‖₂
    else:               # d × d matrices
        forget_odds, energy_f, gains_f = _odds_matrix(forget_sets, alpha_forget)            # M_f
        if retain_sets:
            retain_odds, energy_r, gains_r = _odds_matrix(retain_sets, alpha_retain)        # M_r
            system = torch.eye(width, dtype=forget_odds.dtype, device=forget_odds.device) + forget_odds + retain_odds
            u, singular, vh = torch.linalg.svd(torch.linalg.solve(system, forget_odds).T)   # M_f (I + M_f + M_r)⁻¹
            largest = torch.linalg.eigvalsh(forget_odds)[-1]
        else:           # M_f (I + M_f)⁻¹ is symmetric: M_f's eigenvectors, each eigenvalue s as s/(1 + s)
            odds, u = torch.linalg.eigh(forget_odds)
            odds, u = odds.flip(0).clamp_min(0), u.flip(1)
            singular, vh, largest = odds / (1.0 + odds), u.T, odds[0]
        kept = singular >= min(MIN_GAIN, float(singular[0]))
        left, right = u[:, kept], singular[kept, None] * vh[kept]
        strongest = singular[0]
    if retain_sets:     # without them ‖P‖₂ would be s/(1 + s), s the largest eigenvalue of M_f
        _refuse_if_cancelled(float(strongest / (largest / (1.0 + largest))))
    retain_spectrum = (None, None) if energy_r is None else (energy_r.to(dtype), gains_r.to(dtype))
    return LowRankEraser(left.to(dtype), right.to(dtype), energy_f.to(dtype), gains_f.to(dtype), *retain_spectrum)


def _minimal_factors(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same product ``left @ right`` with an orthonormal ``left`` of the rank the product has: the concepts'
    components overlap (and can outnumber the width), the patch should not store them twice."""
    basis, _ = spectral_basis(left.T)                   # orthonormal basis of the column span of ``left``
    return basis, basis.T @ left @ right


def concept_set_eraser(forget: torch.Tensor, forget_counts: tuple[int, ...], retain: torch.Tensor | None = None,
                       retain_counts: tuple[int, ...] = (), alpha_forget: float = 2.0, alpha_retain: float = 2.0,
                       combination: str = PER_CONCEPT, dtype: torch.dtype = torch.float32) -> LowRankEraser:
    """The eraser of concept sets stored concept after concept (``counts[i]`` rows for concept ``i``):
    :func:`joint_eraser` over each concept's own rows, or the paper's one spectrum (:func:`low_rank_eraser`)."""
    if check_choice(combination, COMBINATIONS, "combination") == ONE_SPECTRUM:
        return low_rank_eraser(forget, retain, alpha_forget, alpha_retain, dtype)
    retain_sets = None if retain is None else split_rows(retain, retain_counts)
    return joint_eraser(split_rows(forget, forget_counts), retain_sets, alpha_forget, alpha_retain, dtype)
