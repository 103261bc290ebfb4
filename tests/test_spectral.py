"""The Spectral Eraser's equations on subspaces whose answer is known."""
import math

import pytest
import torch

from cure_core.edit import edit_layer, edit_layers
from cure_core.spectral import (discriminative_projector, energy_projector, expansion, low_rank_eraser,
                                spectral_basis)

D = 16


def rows(*directions: torch.Tensor, scales=None, generator=None) -> torch.Tensor:
    """Embeddings built from known directions (each row a random combination of them)."""
    basis = torch.stack(directions)
    g = generator or torch.Generator().manual_seed(0)
    coefficients = torch.randn(3 * len(directions), len(directions), generator=g, dtype=torch.float64)
    if scales is not None:
        coefficients = coefficients * torch.tensor(scales, dtype=torch.float64)
    return coefficients @ basis


def e(i: int) -> torch.Tensor:
    v = torch.zeros(D, dtype=torch.float64)
    v[i] = 1.0
    return v


def test_expansion_alpha_one_is_identity_and_endpoints_fixed():
    r = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    assert torch.allclose(expansion(r, 1.0), r)
    for alpha in (2.0, 5.0, 100.0):
        f = expansion(r, alpha)
        assert f[0] == 0 and f[-1] == 1
        assert torch.all(f[1:-1] > r[1:-1])          # expands every share strictly inside (0, 1)


def test_expansion_grows_with_alpha_towards_one():
    r = torch.tensor([0.01, 0.2], dtype=torch.float64)
    previous = r
    for alpha in (2.0, 5.0, 50.0, 1e4):
        f = expansion(r, alpha)
        assert torch.all(f > previous)
        previous = f
    assert torch.all(expansion(r, 1e9) > 1 - 1e-6)


@pytest.mark.parametrize("alpha", [0.5, 0.0, -2.0, math.nan, math.inf, "2"])
def test_alpha_out_of_range_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        expansion(torch.tensor([0.5]), alpha)
    with pytest.raises(ValueError, match="alpha"):
        low_rank_eraser(rows(e(0)), alpha_forget=alpha)


def test_alpha_one_keeps_raw_energy_shares():
    forget = rows(e(0), e(1), e(2), scales=[3.0, 2.0, 1.0])
    p = energy_projector(forget, 1.0)
    sigma = torch.linalg.svdvals(forget)[:3]          # the other 6 are numerically zero
    expected = (sigma**2 / (sigma**2).sum())
    eigenvalues = torch.linalg.eigvalsh(p).flip(0)[:3]
    assert torch.allclose(eigenvalues, expected, atol=1e-12)


def test_forget_directions_orthogonal_to_retain_are_removed():
    forget = rows(e(0), e(1))
    retain = rows(e(2), e(3))
    p_dis = discriminative_projector(forget, retain, alpha_forget=1e8, alpha_retain=2.0)
    unlearn = torch.eye(D, dtype=torch.float64) - p_dis
    assert torch.allclose(unlearn @ e(0), torch.zeros(D, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(unlearn @ e(1), torch.zeros(D, dtype=torch.float64), atol=1e-6)
    for i in (2, 3, 7):                               # retained and unrelated directions pass untouched
        assert torch.allclose(unlearn @ e(i), e(i), atol=1e-12)


def test_retain_directions_pass_unchanged_as_alpha_retain_grows():
    shared = e(2)
    forget = rows(e(0), shared)
    retain = rows(shared, e(5))
    leaks = []
    for alpha_retain in (1.0, 2.0, 10.0, 1e3, 1e7):
        p_dis = discriminative_projector(forget, retain, alpha_forget=5.0, alpha_retain=alpha_retain)
        leaks.append(float((p_dis @ shared).norm()))
    assert all(a > b for a, b in zip(leaks, leaks[1:]))
    assert leaks[-1] < 1e-5
    # ... while the forget-only direction is still erased
    assert float((p_dis @ e(0)).norm()) > 0.5


def test_without_retain_the_projector_is_p_forget():
    forget = rows(e(0), e(4), scales=[2.0, 1.0])
    assert torch.equal(discriminative_projector(forget), energy_projector(forget, 2.0))
    p = discriminative_projector(forget, alpha_forget=3.0)
    assert p.shape == (D, D) and p.dtype == torch.float64
    assert torch.allclose(p, p.T)


def test_low_rank_form_equals_dense_equations():
    g = torch.Generator().manual_seed(1)
    forget = torch.randn(10, D, generator=g, dtype=torch.float64)
    retain = torch.randn(6, D, generator=g, dtype=torch.float64)
    dense = discriminative_projector(forget, retain, alpha_forget=3.0, alpha_retain=100.0)
    eraser = low_rank_eraser(forget, retain, alpha_forget=3.0, alpha_retain=100.0, dtype=torch.float64)
    assert eraser.rank == 10 and eraser.left.shape == (D, 10) and eraser.right.shape == (10, D)
    assert torch.allclose(eraser.dense(), dense, atol=1e-12)
    eraser32 = low_rank_eraser(forget.float(), retain.float(), alpha_forget=3.0, alpha_retain=100.0)
    assert eraser32.left.dtype == torch.float32
    assert torch.allclose(eraser32.dense().double(), dense, atol=1e-5)


def test_rank_deficient_and_duplicate_rows():
    forget = rows(e(0), e(1))                         # 6 rows spanning 2 directions
    duplicated = torch.cat([forget, forget, forget[:1]])
    basis, energy = spectral_basis(duplicated)
    assert basis.shape == (D, 2)
    assert torch.allclose(energy.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64), atol=1e-10)
    # duplicating every row changes nothing: energy shares are relative
    assert torch.allclose(energy_projector(torch.cat([forget, forget]), 2.0), energy_projector(forget, 2.0),
                          atol=1e-12)


def test_more_rows_than_width_uses_the_covariance_path_with_the_same_result():
    g = torch.Generator().manual_seed(2)
    tall = torch.randn(3 * D, 4, generator=g, dtype=torch.float64) @ torch.randn(4, D, generator=g,
                                                                                  dtype=torch.float64)
    basis, energy = spectral_basis(tall)               # n > d: eigendecomposition of EᵀE
    assert basis.shape == (D, 4)
    sigma = torch.linalg.svdvals(tall)[:4]
    assert torch.allclose(energy, sigma**2 / (sigma**2).sum(), atol=1e-10)


def test_bad_embeddings_are_refused():
    with pytest.raises(ValueError, match="empty"):
        low_rank_eraser(torch.zeros(0, D))
    with pytest.raises(ValueError, match="NaN or inf"):
        low_rank_eraser(torch.full((2, D), math.nan))
    with pytest.raises(ValueError, match="zero"):
        low_rank_eraser(torch.zeros(3, D))
    with pytest.raises(ValueError, match="wide"):
        low_rank_eraser(torch.randn(3, D), torch.randn(3, D + 1))
    with pytest.raises(ValueError, match="matrix"):
        low_rank_eraser(torch.randn(D))


def test_retain_set_that_swallows_the_forget_set_is_refused():
    forget = rows(e(0), e(1))
    retain = rows(e(0), e(1), e(2))
    with pytest.raises(ValueError, match="retain concepts cover the forget concepts"):
        low_rank_eraser(forget, retain, alpha_forget=2.0, alpha_retain=1e6)


def test_edit_layer_applies_w_times_i_minus_p_dis():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(7, D, generator=g, dtype=torch.float64)
    forget = torch.randn(5, D, generator=g, dtype=torch.float64)
    retain = torch.randn(4, D, generator=g, dtype=torch.float64)
    eraser = low_rank_eraser(forget, retain, 4.0, 8.0, dtype=torch.float64)
    edit = edit_layer("w", weight, eraser, forget, retain)
    edited = weight + edit.up @ edit.down
    p_dis = discriminative_projector(forget, retain, 4.0, 8.0)
    assert torch.allclose(edited, weight @ (torch.eye(D, dtype=torch.float64) - p_dis), atol=1e-12)
    assert edit.forget_removed == pytest.approx(
        1 - float((forget @ edited.T).square().sum() / (forget @ weight.T).square().sum()), rel=1e-9)
    assert edit.retain_change == pytest.approx(
        float((retain @ (edited - weight).T).norm() / (retain @ weight.T).norm()), rel=1e-9)
    assert edit.weight_change == pytest.approx(float((edited - weight).norm() / weight.norm()), rel=1e-9)


def test_the_reports_figures_on_the_row_sketch_stay_close_to_every_rows():
    """The node measures the per-layer figures on :func:`row_sketch` (the rows' principal components holding
    ``SKETCH_ENERGY`` of their energy) instead of every row: on rows as flat as a random-weight encoder gives (300
    rows, full rank, slowly falling spectrum), the energy removed moves by less than a fifth of a point and
    the retained outputs' movement by less than a tenth of itself (a sketch of 90 % moves them by 0.7 points and
    19 %)."""
    from cure_core.edit import SKETCH_ENERGY, row_sketch
    g = torch.Generator().manual_seed(11)
    width = 96
    decay = torch.linspace(1.0, 0.05, width, dtype=torch.float64)
    forget = torch.randn(300, width, generator=g, dtype=torch.float64) * decay
    retain = torch.randn(200, width, generator=g, dtype=torch.float64) * decay.flip(0)
    weight = torch.randn(40, width, generator=g, dtype=torch.float64)
    eraser = low_rank_eraser(forget[:100], retain[:100], 2.0, 2.0, dtype=torch.float64)
    exact = edit_layer("w", weight, eraser, forget, retain)
    sketched = edit_layer("w", weight, eraser, row_sketch(forget), row_sketch(retain))
    assert row_sketch(forget).shape[0] < width                  # the sketch is smaller than the rows' rank
    assert SKETCH_ENERGY >= 0.99                                # lowering it needs this test's bounds re-measured
    assert abs(sketched.forget_removed - exact.forget_removed) < 0.002, (sketched, exact)
    assert abs(sketched.retain_change - exact.retain_change) < 0.1 * exact.retain_change, (sketched, exact)
    assert sketched.weight_change == exact.weight_change


@pytest.mark.parametrize("forget_rows, through_weight_gram", [(3, False), (60, True)])
def test_the_reports_figures_are_the_same_through_the_rows_and_through_each_weights_gram(forget_rows,
                                                                                       through_weight_gram):
    """Few rows and a narrow eraser: the rows go through each layer; many rows and a wide eraser (a long list):
    each layer's ``WᵀW`` is read against shared ``d × d`` matrices. Both give the figures' definitions."""
    from cure_core.edit import LayerMeasure
    g = torch.Generator().manual_seed(12)
    weight = torch.randn(9, D, generator=g, dtype=torch.float64)
    forget = torch.randn(forget_rows, D, generator=g, dtype=torch.float64)
    retain = torch.randn(forget_rows, D, generator=g, dtype=torch.float64)
    eraser = low_rank_eraser(forget, retain, 3.0, 2.0, dtype=torch.float64)
    measure = LayerMeasure(eraser, forget, retain)
    assert measure.through_weight_gram is through_weight_gram
    edit = measure.edit("w", weight)
    change = edit.up @ edit.down
    assert edit.forget_removed == pytest.approx(
        1 - float((forget @ (weight + change).T).square().sum() / (forget @ weight.T).square().sum()), rel=1e-9)
    assert edit.retain_change == pytest.approx(float((retain @ change.T).norm() / (retain @ weight.T).norm()),
                                               rel=1e-9)
    assert edit.weight_change == pytest.approx(float(change.norm() / weight.norm()), rel=1e-9)


def test_edit_layer_on_leading_columns_only():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(6, D + 5, generator=g, dtype=torch.float64)
    pooled = torch.randn(3, D, generator=g, dtype=torch.float64)
    eraser = low_rank_eraser(pooled, alpha_forget=1e8, dtype=torch.float64)
    edit = edit_layer("label_emb", weight, eraser, pooled, columns=D)
    edited = weight + edit.up @ edit.down
    assert torch.equal(edited[:, D:], weight[:, D:])
    assert float((pooled @ edited[:, :D].T).norm()) < 1e-6 * float((pooled @ weight[:, :D].T).norm())


def test_weight_with_nan_is_refused():
    eraser = low_rank_eraser(rows(e(0)))
    weight = torch.randn(4, D)
    weight[1, 2] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        eraser.weight_update(weight)


def test_edit_layers_shares_the_down_factor_across_layers():
    g = torch.Generator().manual_seed(5)
    weights = {"to_k": torch.randn(5, D, generator=g), "to_v": torch.randn(9, D, generator=g)}
    forget = torch.randn(4, D, generator=g)
    eraser = low_rank_eraser(forget)
    edits = edit_layers(weights, eraser, forget)
    assert [e.key for e in edits] == ["to_k", "to_v"]
    assert edits[0].down is edits[1].down                        # one [k, d] factor for every layer
    for e in edits:
        assert torch.allclose(weights[e.key] + e.up @ e.down, weights[e.key] @ (torch.eye(D) - eraser.dense()),
                              atol=1e-5)


def test_components_too_weak_to_change_a_half_precision_weight_are_left_out():
    from cure_core.spectral import MIN_GAIN
    forget = rows(e(0), e(1), e(2), scales=[1.0, 0.1, 0.001])     # shares of about 0.99, 0.01 and 1e-6
    basis, energy = spectral_basis(forget)
    assert basis.shape[1] == 3 and expansion(energy, 2.0)[2] < MIN_GAIN
    eraser = low_rank_eraser(forget, alpha_forget=2.0, dtype=torch.float64)
    assert eraser.rank == 2 and torch.all(eraser.gains >= MIN_GAIN)
    assert torch.allclose(eraser.dense(), energy_projector(forget, 2.0, MIN_GAIN), atol=1e-12)   # one operator
    full = (basis * expansion(energy, 2.0)) @ basis.T
    assert torch.allclose(energy_projector(forget, 2.0), full, atol=1e-12)    # the reference has no cutoff
    assert torch.allclose(discriminative_projector(forget), full, atol=1e-12)
    assert float(torch.linalg.matrix_norm(eraser.dense() - full, ord=2)) < MIN_GAIN      # what is left out is tiny
    assert low_rank_eraser(forget, alpha_forget=1e6, dtype=torch.float64).rank == 3      # ... until α makes it strong


# ---- several concepts: one spectrum per concept, combined once --------------------------------------

def concept(*indices: int, seed: int = 0, scales=None) -> torch.Tensor:
    return rows(*(e(i) for i in indices), scales=scales, generator=torch.Generator().manual_seed(seed))


def gain_along(p: torch.Tensor, direction: torch.Tensor) -> float:
    """How much of ``direction`` the operator removes: ``dᵀ P d`` for a unit ``d``."""
    d = direction / direction.norm()
    return float(d @ p @ d)


def test_one_concept_alone_is_exactly_the_papers_projector():
    from cure_core.spectral import joint_eraser
    forget = torch.randn(9, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    joint = joint_eraser([forget], alpha_forget=3.0, dtype=torch.float64)
    paper = low_rank_eraser(forget, alpha_forget=3.0, dtype=torch.float64)
    assert torch.allclose(joint.dense(), paper.dense(), atol=1e-12)
    assert torch.allclose(joint.gains, paper.gains, atol=1e-12)


def test_a_list_erases_each_concept_as_strongly_as_alone():
    """The paper's single spectrum dilutes: with five concepts each holds a fifth of the energy and its gain
    falls; per-concept spectra keep each concept's gain at what erasing it alone gives."""
    from cure_core.spectral import joint_eraser
    concepts = [concept(i, i + 5, seed=i, scales=[1.0, 0.3]) for i in range(5)]    # in orthogonal planes
    joint = joint_eraser(concepts, alpha_forget=2.0, dtype=torch.float64)
    union = low_rank_eraser(torch.cat(concepts), alpha_forget=2.0, dtype=torch.float64)
    for i, rows_i in enumerate(concepts):
        alone = low_rank_eraser(rows_i, alpha_forget=2.0, dtype=torch.float64)
        assert gain_along(joint.dense(), e(i)) == pytest.approx(gain_along(alone.dense(), e(i)), abs=1e-9)
        assert gain_along(union.dense(), e(i)) < 0.75 * gain_along(alone.dense(), e(i))   # diluted
    assert sorted(joint.gains.tolist(), reverse=True) == pytest.approx(joint.gains.tolist())   # strongest first


def test_the_combination_is_computed_once_not_chained():
    """Overlapping concepts: the joint operator does not depend on the order of the list, is symmetric, and
    removes a shared direction at least as strongly as either concept alone; chaining two edits does
    depend on the order."""
    from cure_core.spectral import joint_eraser
    a = concept(0, 1, seed=1, scales=[1.0, 0.6])
    b = rows(e(1) + e(2), e(3), generator=torch.Generator().manual_seed(2))
    ab = joint_eraser([a, b], dtype=torch.float64).dense()
    ba = joint_eraser([b, a], dtype=torch.float64).dense()
    assert torch.allclose(ab, ba, atol=1e-12) and torch.allclose(ab, ab.T, atol=1e-12)
    eigenvalues = torch.linalg.eigvalsh(ab)
    assert eigenvalues.min() > -1e-12 and eigenvalues.max() < 1.0               # never overshoots a direction
    shared = e(1)
    for alone in (a, b):
        assert gain_along(ab, shared) >= gain_along(low_rank_eraser(alone, dtype=torch.float64).dense(), shared) - 1e-12
    pa, pb = (low_rank_eraser(x, dtype=torch.float64).dense() for x in (a, b))
    identity = torch.eye(D, dtype=torch.float64)
    assert not torch.allclose((identity - pa) @ (identity - pb), (identity - pb) @ (identity - pa), atol=1e-3)


def test_a_retained_neighbour_keeps_its_direction_while_the_concept_goes():
    """Forget u and retain v at 60 degrees: the paper's P_f (I − P_r) removes only sin² of u (a quarter here);
    the joint operator removes u along v (an oblique projection) and leaves v where it was."""
    from cure_core.spectral import joint_eraser
    u = e(0)
    v = 0.5 * e(0) + math.sqrt(0.75) * e(1)
    forget, retain = u[None] * 3.0, v[None] * 2.0                      # one row each: gain 1 at any α
    paper = discriminative_projector(forget, retain, 2.0, 2.0)
    joint = joint_eraser([forget], [retain], 2.0, 2.0, dtype=torch.float64).dense()
    assert float((paper @ u) @ u) == pytest.approx(0.75, abs=1e-6)     # sin²(60°) of u removed
    assert torch.allclose(joint @ u, u, atol=1e-6)                      # all of u removed ...
    assert torch.allclose(joint @ v, torch.zeros(D, dtype=torch.float64), atol=1e-6)    # ... v untouched


def test_a_long_retain_list_does_not_shrink_the_erasure_of_what_it_does_not_cover():
    from cure_core.spectral import joint_eraser
    g = torch.Generator().manual_seed(5)
    forget = concept(0, 1, seed=5, scales=[1.0, 0.3])
    outside = torch.cat([torch.zeros(2), torch.ones(D - 2)]).double()
    retain = [torch.randn(4, D, generator=g, dtype=torch.float64) * outside for _ in range(300)]   # none along e(0), e(1)
    joint = joint_eraser([forget], retain, 2.0, 2.0, dtype=torch.float64).dense()
    assert gain_along(joint, e(0)) == pytest.approx(gain_along(low_rank_eraser(forget, dtype=torch.float64).dense(),
                                                                e(0)), abs=1e-9)
    with pytest.raises(ValueError, match="retain concepts cover the forget concepts"):
        joint_eraser([forget], [forget * 2.0], 2.0, 1e6)


def test_the_concept_set_eraser_picks_the_combination():
    from cure_core.spectral import ONE_SPECTRUM, PER_CONCEPT, concept_set_eraser, joint_eraser
    a, b = concept(0, seed=1), concept(1, 2, seed=2)
    stacked, counts = torch.cat([a, b]), (a.shape[0], b.shape[0])
    paper = concept_set_eraser(stacked, counts, combination=ONE_SPECTRUM, dtype=torch.float64)
    assert torch.allclose(paper.dense(), low_rank_eraser(stacked, dtype=torch.float64).dense(), atol=1e-12)
    joint = concept_set_eraser(stacked, counts, combination=PER_CONCEPT, dtype=torch.float64)
    assert torch.allclose(joint.dense(), joint_eraser([a, b], dtype=torch.float64).dense(), atol=1e-12)
    with pytest.raises(ValueError, match="Unknown combination"):
        concept_set_eraser(stacked, counts, combination="average")
    with pytest.raises(ValueError, match="do not describe"):
        concept_set_eraser(stacked, (1, 2))


def test_more_components_than_the_width_solve_the_same_operator():
    """A long list with flat spectra has more kept components than the width: the d × d solve gives the
    operator's formula, M_f (I + M_f + M_r)⁻¹, as the k × k one does for a short list."""
    from cure_core.spectral import MAX_ODDS, expanded_basis, joint_eraser

    def odds_matrix(sets):
        total = torch.zeros(D, D, dtype=torch.float64)
        for rows_c in sets:
            basis, _, gains = expanded_basis(rows_c, 2.0)
            total += (basis * (gains / (1 - gains).clamp_min(1 / MAX_ODDS)).clamp_max(MAX_ODDS)) @ basis.T
        return total

    g = torch.Generator().manual_seed(7)
    for count in (1, 6):                               # 1: k ≤ d (Woodbury), 6 × 12 rows: k > d
        forget = [torch.randn(12, D, generator=g, dtype=torch.float64) for _ in range(count)]
        for retain in ([torch.randn(3, D, generator=g, dtype=torch.float64)], None):   # None: M_f's eigenvectors
            m_f = odds_matrix(forget)
            m_r = torch.zeros_like(m_f) if retain is None else odds_matrix(retain)
            expected = m_f @ torch.linalg.inv(torch.eye(D, dtype=torch.float64) + m_f + m_r)
            eraser = joint_eraser(forget, retain, dtype=torch.float64)
            assert torch.allclose(eraser.dense(), expected, atol=1e-9), (count, retain is None)
            assert eraser.rank <= D


def test_orthogonal_rows_are_their_own_basis_without_a_decomposition(monkeypatch):
    """A stored spectral factor (the erase node keeps each concept's rows as one) is not decomposed again: same
    shares and projector as the rows it came from. Rows only nearly orthogonal are still decomposed."""
    from cure_core.spectral import principal_rows

    g = torch.Generator().manual_seed(8)
    raw = torch.randn(10, D, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.1, D, dtype=torch.float64)
    factor = principal_rows(raw)
    basis, shares = spectral_basis(raw)
    nearly = factor.clone()
    nearly[1] += 1e-3 * factor[0] / factor[0].norm() * factor[1].norm()       # cosine 1e-3 with the first row
    calls, decompose = [], torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda *a, **k: calls.append(1) or decompose(*a, **k))
    factor_basis, factor_shares = spectral_basis(factor)
    assert not calls
    assert torch.allclose(factor_shares, shares, atol=1e-12)
    assert torch.allclose(factor_basis @ factor_basis.T, basis @ basis.T, atol=1e-10)
    nearly_basis, nearly_shares = spectral_basis(nearly)
    assert calls                                       # nearly orthogonal rows are decomposed, and exactly
    gram = (nearly_basis * nearly_shares * nearly.square().sum()) @ nearly_basis.T
    assert torch.allclose(gram, nearly.T @ nearly, atol=1e-10)


def test_a_spectral_factor_keeps_every_component_that_can_reach_the_cutoff():
    """What an erasure stores per concept: the principal rows whose share can still reach MIN_GAIN at the node's
    largest α, with the same EᵀE on them; full-rank rows with every component useful are kept as they are."""
    from cure_core.spectral import principal_rows, smallest_useful_share, spectral_factor

    g = torch.Generator().manual_seed(9)
    floor = smallest_useful_share()
    decaying = torch.randn(12, D, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, -6, D,
                                                                                              dtype=torch.float64))
    basis, shares = spectral_basis(decaying)
    factor = spectral_factor(decaying)
    useful = int((shares >= floor).sum())
    assert 1 <= useful < decaying.shape[0] and factor.shape[0] == useful
    strong = (basis[:, :useful] * shares[:useful] * decaying.square().sum()) @ basis[:, :useful].T
    assert torch.allclose(factor.T @ factor, strong, atol=1e-9)
    flat = torch.randn(12, D, generator=g, dtype=torch.float64)
    assert spectral_factor(flat) is flat                           # nothing to leave out: no decomposition
    single = flat.float()                                          # the encoder's float32 rows, tested as they are
    assert spectral_factor(single) is single
    assert torch.allclose(principal_rows(flat).T @ principal_rows(flat), flat.T @ flat, atol=1e-9)


def test_a_long_list_gives_the_same_operator_from_raw_rows_and_from_their_factors():
    """More rows than the width: each concept's odds from a Cholesky factor (raw rows), from its own rows
    (orthogonal factors) or from its eigenvectors (one direction holding nearly everything, more rows than the
    width) make one operator, M_f (I + M_f)⁻¹ over every component, whatever form the rows came in."""
    from cure_core.spectral import MAX_ODDS, joint_eraser, principal_rows

    g = torch.Generator().manual_seed(10)
    sets = [torch.randn(n, D, generator=g, dtype=torch.float64) for n in (9, 5, 12, D + 4)]
    dominant = torch.randn(9, 1, generator=g, dtype=torch.float64) * e(0)[None, :]
    sets.append(dominant + 1e-5 * torch.randn(9, D, generator=g, dtype=torch.float64))
    m_f = torch.zeros(D, D, dtype=torch.float64)
    for rows_c in sets:
        basis, shares = spectral_basis(rows_c)
        gains = expansion(shares, 2.0)
        m_f += (basis * (gains / (1 - gains).clamp_min(1 / MAX_ODDS)).clamp_max(MAX_ODDS)) @ basis.T
    expected = m_f @ torch.linalg.inv(torch.eye(D, dtype=torch.float64) + m_f)
    from_raw = joint_eraser(sets, dtype=torch.float64)
    from_factors = joint_eraser([principal_rows(rows_c) for rows_c in sets], dtype=torch.float64)
    assert torch.allclose(from_raw.dense(), expected, atol=1e-8)
    assert torch.allclose(from_factors.dense(), expected, atol=1e-8)
    assert torch.allclose(from_raw.energy, from_factors.energy, atol=1e-12)
