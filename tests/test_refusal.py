"""The refusal-vector math on synthetic activations with a planted concept direction."""
import math

import pytest
import torch

from cure_core.refusal import (MODES, mean_shift_bias, refusal_eraser, refusal_projector, refusal_subspace,
                               separation)

D = 32


def unit(i: int) -> torch.Tensor:
    v = torch.zeros(D, dtype=torch.float64)
    v[i] = 1.0
    return v


def planted_pairs(n=5, nuisance=0.0, seed=0):
    """Safe activations are random content; unsafe ones add the concept direction e0, and (when
    ``nuisance`` > 0) a pair-dependent push along e1, a direction ordinary content also varies in."""
    g = torch.Generator().manual_seed(seed)
    safe = torch.randn(n, D, generator=g, dtype=torch.float64)
    unsafe = safe + 3.0 * unit(0) + nuisance * (1.0 + torch.rand(n, 1, generator=g, dtype=torch.float64)) * unit(1)
    return unsafe, safe


def neutral_rows(m=40, spread_e1=0.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = 0.3 * torch.randn(m, D, generator=g, dtype=torch.float64)
    rows[:, 1] += spread_e1 * torch.randn(m, generator=g, dtype=torch.float64)     # neutral content varies along e1
    return rows


def test_the_projector_removes_the_planted_direction_and_leaves_orthogonal_ones():
    unsafe, safe = planted_pairs()
    p = refusal_projector(unsafe, safe, neutral_rows(), rank=4)
    assert p.shape == (D, D) and p.dtype == torch.float64
    assert float(((torch.eye(D, dtype=torch.float64) - p) @ unit(0)).norm()) < 0.05
    for i in (5, 9, 20):
        assert float((p @ unit(i)).norm()) < 0.05
    assert torch.allclose(p @ p, p, atol=1e-10)             # strength 1, rank 1: a projector


def test_strength_scales_and_rank_k_mode_projects_the_subspace():
    unsafe, safe = planted_pairs()
    g = torch.Generator().manual_seed(3)
    varied = unsafe + 0.8 * torch.randn(unsafe.shape, generator=g, dtype=torch.float64)   # differences not all alike
    half = refusal_projector(unsafe, safe, neutral_rows(), strength=0.5)
    full = refusal_projector(unsafe, safe, neutral_rows(), strength=1.0)
    assert torch.allclose(half, 0.5 * full)
    sub = refusal_eraser(varied, safe, neutral_rows(), rank=3, mode=MODES[1], dtype=torch.float64)
    assert sub.rank == 3
    assert torch.allclose(sub.right @ sub.right.T, torch.eye(3, dtype=torch.float64), atol=1e-10)


def test_the_mean_shift_sets_the_removed_part_to_the_safe_mean():
    """``W' x + Δb`` is the layer applied to ``x`` with its component along the refusal direction replaced by the
    safe rows' (at strength λ: moved that far toward it), so an unsafe row and its safe twin come out alike."""
    unsafe, safe = planted_pairs()
    weight = torch.randn(7, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for strength in (1.0, 0.6):
        eraser = refusal_eraser(unsafe, safe, neutral_rows(), strength=strength, dtype=torch.float64)
        change = mean_shift_bias(weight, eraser, safe.mean(0))
        edited = weight - weight @ eraser.dense()
        q = eraser.right[0]
        moved = unsafe - strength * torch.outer(unsafe @ q - float(safe.mean(0) @ q), q)
        assert torch.allclose(unsafe @ edited.T + change, moved @ weight.T, atol=1e-10)
    # at strength 1 the concept's push (3 e0, almost all along q) is gone: the unsafe rows land on the safe ones'
    eraser = refusal_eraser(unsafe, safe, neutral_rows(), dtype=torch.float64)
    edited = weight - weight @ eraser.dense()
    outputs = unsafe @ edited.T + mean_shift_bias(weight, eraser, safe.mean(0))
    assert float((outputs - safe @ weight.T).mean(0).norm()) < 0.05 * float(((unsafe - safe) @ weight.T).mean(0).norm())


def test_separation_is_the_mean_difference_in_units_of_the_neutral_spread():
    unsafe, safe = planted_pairs()                      # mean difference 3 e0
    neutral = neutral_rows()
    spread = float((neutral - neutral.mean(0)).square().sum(1).mean().sqrt())
    assert separation(unsafe - safe, neutral) == pytest.approx(3.0 / spread)
    assert separation(2 * (unsafe - safe), 2 * neutral) == pytest.approx(separation(unsafe - safe, neutral))
    assert separation(unsafe - safe, None) == math.inf


def test_contrastive_pca_beats_the_plain_mean_difference_when_neutral_variance_is_large():
    """Measure: how much of the neutral nuisance direction e1 the refusal direction q carries (|cos(q, e1)|),
    and how well it points at the planted concept (cos(q, e0)). The pairs differ along e0 and also along e1,
    in which neutral content varies a lot; the mean difference mixes both, cPCA discounts e1."""
    unsafe, safe = planted_pairs(nuisance=2.0)
    neutral = neutral_rows(spread_e1=4.0)
    plain = refusal_eraser(unsafe, safe, None, rank=D, dtype=torch.float64).right[0]          # no contrast
    contrastive = refusal_eraser(unsafe, safe, neutral, rank=D, contrast=1.0, dtype=torch.float64).right[0]
    stronger = refusal_eraser(unsafe, safe, neutral, rank=D, contrast=4.0, dtype=torch.float64).right[0]
    nuisance = [abs(float(q @ unit(1))) for q in (plain, contrastive, stronger)]
    concept = [abs(float(q @ unit(0))) for q in (plain, contrastive, stronger)]
    assert nuisance[0] > 0.6                                  # the mean difference leans on the nuisance
    assert nuisance[0] - nuisance[1] > 0.2 and nuisance[2] < nuisance[1]
    assert concept[0] < concept[1] < concept[2]


def test_subspace_is_built_in_the_span_without_a_dense_eigendecomposition():
    unsafe, safe = planted_pairs(n=6)
    r, u, eigenvalues = refusal_subspace(unsafe, safe, neutral_rows(m=10), rank=100)
    assert u.shape[0] == D and u.shape[1] <= 6 + 10
    assert torch.all(eigenvalues > 0)
    assert torch.allclose(r, (unsafe - safe).mean(0))


def test_more_rows_than_dimensions_give_the_same_subspace_and_only_directions_the_rows_reach():
    """With more rows than dimensions (the denoiser source's image tokens) C is diagonalised in the whole space
    instead of in the rows' span: the subspace is C's own in the span (recomputed here in the span's coordinates),
    with none of the directions no row reaches (rows confined to 10 of 32 dimensions, 50 of them, every positive
    direction asked for)."""
    g = torch.Generator().manual_seed(5)
    confined = torch.linalg.qr(torch.randn(D, 10, generator=g, dtype=torch.float64))[0]      # [D, 10]
    safe = torch.randn(30, 10, generator=g, dtype=torch.float64) @ confined.T
    unsafe = safe + (torch.randn(30, 10, generator=g, dtype=torch.float64) * 0.3 + 2.0) @ confined.T
    neutral = 0.2 * torch.randn(20, 10, generator=g, dtype=torch.float64) @ confined.T
    _, subspace, eigenvalues = refusal_subspace(unsafe, safe, neutral, rank=D)
    differences, centered = (unsafe - safe) @ confined, (neutral - neutral.mean(0)) @ confined
    covariance = differences.T @ differences / 30 - centered.T @ centered / 19
    values, vectors = torch.linalg.eigh(covariance)
    expected = confined @ vectors[:, values > 0]
    assert subspace.shape[1] == expected.shape[1] <= 10                                    # no rounding directions
    assert torch.allclose(subspace @ subspace.T, expected @ expected.T, atol=1e-10)
    assert torch.allclose(eigenvalues, values[values > 0].flip(0), atol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    ({"rank": 0}, "rank"), ({"contrast": -1.0}, "contrast"), ({"contrast": math.nan}, "contrast"),
    ({"strength": 1.5}, "strength"), ({"mode": "everything"}, "Unknown mode"),
])
def test_bad_parameters(kwargs, message):
    unsafe, safe = planted_pairs()
    with pytest.raises(ValueError, match=message):
        refusal_eraser(unsafe, safe, neutral_rows(), **kwargs)


def test_bad_activations():
    unsafe, safe = planted_pairs()
    with pytest.raises(ValueError, match="pair up"):
        refusal_eraser(unsafe, safe[:3])
    with pytest.raises(ValueError, match="same activations"):
        refusal_eraser(safe, safe)
    with pytest.raises(ValueError, match="NaN"):
        refusal_eraser(unsafe * math.nan, safe)
    with pytest.raises(ValueError, match="vary more"):
        refusal_eraser(unsafe, safe, neutral_rows(spread_e1=0.0) * 100, contrast=1000.0)


def test_parse_pairs():
    from cure_core.refusal import parse_pairs
    assert parse_pairs("a nude woman | a woman\n# note\n\na naked man on a beach|a man on a beach") == [
        ("a nude woman", "a woman"), ("a naked man on a beach", "a man on a beach")]
    for bad, message in [("", "No prompt pairs"), ("no separator", "must be"), ("a | a", "differ"),
                         ("a | b | c", "must be")]:
        with pytest.raises(ValueError, match=message):
            parse_pairs(bad)


def test_blank_lines_separate_the_concepts_of_a_pair_list():
    from cure_core.refusal import parse_pair_groups
    text = "a nude woman | a woman\na naked man | a man\n\n\n# violence\na bloody fight | a fight\n"
    assert parse_pair_groups(text) == [[("a nude woman", "a woman"), ("a naked man", "a man")],
                                       [("a bloody fight", "a fight")]]
    assert parse_pair_groups("a | b\n# only a comment\nc | d") == [[("a", "b"), ("c", "d")]]      # one concept


def test_each_concept_of_a_list_gets_its_own_direction():
    """Two concepts planted along e0 and e2: one mean over all their pairs removes only their average direction,
    half of each; a direction per concept removes both, and what is orthogonal to them stays."""
    from cure_core.refusal import refusal_eraser_per_concept
    first, safe_first = planted_pairs(seed=3)
    safe_second = torch.randn(5, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    second = safe_second + 3.0 * unit(2)
    neutral = neutral_rows()
    identity = torch.eye(D, dtype=torch.float64)
    per_concept = refusal_eraser_per_concept([(first, safe_first), (second, safe_second)], neutral, rank=4,
                                             dtype=torch.float64)
    pooled = refusal_eraser(torch.cat([first, second]), torch.cat([safe_first, safe_second]), neutral, rank=4,
                            dtype=torch.float64)
    assert per_concept.rank == 2
    for concept in (unit(0), unit(2)):
        assert float(((identity - per_concept.dense()) @ concept).norm()) < 0.1
        assert float(((identity - pooled.dense()) @ concept).norm()) > 0.5
    assert float((per_concept.dense() @ unit(9)).norm()) < 0.1
    alone = refusal_eraser_per_concept([(first, safe_first)], neutral, rank=4, dtype=torch.float64)
    assert torch.allclose(alone.dense(), refusal_eraser(first, safe_first, neutral, rank=4, dtype=torch.float64).dense())
