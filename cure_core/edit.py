"""Turn a :class:`~cure_core.spectral.LowRankEraser` into per-layer low-rank weight updates.

Each update is a LoRA-style pair ``(up, down)`` with ``W' = W + up @ down``; the
measures kept beside it say what the edit does to that layer, for the report.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .spectral import LowRankEraser, principal_rows

# The report's per-layer figures are measured on the rows' principal components that hold this share of their
# energy (see :func:`row_sketch`): the energy removed moves by a fraction of a point, the retained outputs' movement
# by a few per cent of itself (tested on rows as flat as a random-weight encoder's). A trained
# encoder's concept rows need a few components for it; a random-weight encoder's, a sixth of its rows (at 99.9 %
# it took a third, and measuring the figures was most of what the SD1.5 node added to its encoding).
SKETCH_ENERGY = 0.99


@dataclass(frozen=True)
class LayerEdit:
    key: str
    up: torch.Tensor                 # [out, k]
    down: torch.Tensor               # [k, in]
    weight_change: float             # ‖ΔW‖_F / ‖W‖_F
    forget_removed: float            # share of the forget embeddings' output energy removed
    retain_change: float | None      # ‖ΔW E_r‖ / ‖W E_r‖: how much retained outputs move

    @property
    def numel(self) -> int:
        return self.up.numel() + self.down.numel()


def row_sketch(rows: torch.Tensor, energy: float = SKETCH_ENERGY) -> torch.Tensor:
    """A few rows ``B`` with ``BᵀB ≈ EᵀE`` (:func:`~cure_core.spectral.principal_rows` holding ``energy`` of the
    total), so that ``‖E Xᵀ‖`` for any ``X`` is measured on ``B``. Every figure of :func:`edit_layer` depends on
    its rows only through ``EᵀE``: computed once per set of rows, the sketch makes the figures cost a few rows
    per layer instead of hundreds (a concept contribution is every padded row of every prompt)."""
    return principal_rows(rows, energy=energy)


def _squared_frobenius_of_product(up: torch.Tensor, down_gram: torch.Tensor) -> float:
    """‖up @ down‖²_F without forming the product (``down_gram = down @ downᵀ``)."""
    return float(((up.T @ up) * down_gram).sum())


class LayerMeasure:
    """The edits of the layers that read the same rows, with the figures of each: what they share is computed once,
    not once per layer.

    Every figure is a quadratic form of the rows: ``‖W A eᵀ‖²`` summed over rows ``e`` is ``⟨WᵀW, A S Aᵀ⟩`` with
    ``S = EᵀE``. With a few rows and a low-rank eraser (one concept, a trained encoder) the rows are pushed
    through each layer (``s`` rows, ``k`` components: ``out·(s·d + s·k + k²)`` per layer); with many rows and a
    wide eraser (a long list) each layer's ``WᵀW`` is read against ``d × d`` matrices shared by all the layers
    (``out·d²``, half of it or less), whichever costs less."""

    def __init__(self, eraser: LowRankEraser, forget: torch.Tensor, retain: torch.Tensor | None = None,
                 sketch: bool = False):
        """``sketch``: measure on :func:`row_sketch` of a set with fewer rows than the width (with more, its exact
        ``EᵀE`` costs less than a sketch would)."""
        self.eraser = eraser
        device, dtype = eraser.left.device, eraser.left.dtype
        rank, width = eraser.rank, eraser.dim

        def prepared(rows: torch.Tensor) -> torch.Tensor:
            rows = rows.to(device=device, dtype=dtype)
            return row_sketch(rows) if sketch and rows.shape[0] <= width else rows

        forget = prepared(forget)
        retain = None if retain is None else prepared(retain)
        self.with_retain = retain is not None
        rows = forget.shape[0] + (0 if retain is None else retain.shape[0])
        self.through_weight_gram = width * width < rows * (width + rank) + rank * rank
        if self.through_weight_gram:
            projector = eraser.dense()
            kept = torch.eye(width, device=device, dtype=dtype) - projector
            forget_gram = forget.T @ forget
            # ⟨WᵀW, ·⟩ of each: forget energy before and after, ‖ΔW‖², retained energy before and moved
            self.quadratic_forms = [forget_gram, kept @ forget_gram @ kept.T, projector @ projector.T]
            if retain is not None:
                retain_gram = retain.T @ retain
                self.quadratic_forms += [retain_gram, projector @ retain_gram @ projector.T]
        else:
            self.rows = forget if retain is None else torch.cat([forget, retain])
            self.forget_count = forget.shape[0]
            self.through_right = self.rows @ eraser.right.T          # rows: P's right factor applied to e
            self.right_gram = eraser.right @ eraser.right.T

    def edit(self, key: str, weight: torch.Tensor, columns: int | None = None) -> LayerEdit:
        """The update ``W' = W (I − P_dis)`` for one weight ``[out, in]``.

        ``columns`` restricts the edit to the first input columns (a layer whose input is
        the pooled text vector followed by other features, like SDXL's ``label_emb``).
        """
        eraser = self.eraser
        weight = weight.to(device=eraser.left.device, dtype=eraser.left.dtype)
        read = weight if columns is None else weight[:, :columns]
        up, down = eraser.weight_update(read)
        if columns is not None:
            padded = torch.zeros(down.shape[0], weight.shape[1], device=down.device, dtype=down.dtype)
            padded[:, :columns] = down
            down = padded
        if self.through_weight_gram:
            weight_gram = read.T @ read
            energies = [float((weight_gram * form).sum()) for form in self.quadratic_forms]
            forget_before, forget_after, change = energies[:3]
            retain_moved = (energies[4] / max(energies[3], 1e-30)) ** 0.5 if self.with_retain else None
        else:
            before = self.rows @ read.T                             # rows: W e for each embedding
            delta = self.through_right @ up.T                       # rows: ΔW e
            count = self.forget_count
            forget_before = float(before[:count].square().sum())
            forget_after = float((before[:count] + delta[:count]).square().sum())
            change = _squared_frobenius_of_product(up, self.right_gram)
            retain_moved = (float(delta[count:].norm() / before[count:].norm().clamp_min(1e-30))
                            if self.with_retain else None)
        forget_removed = 1.0 - forget_after / max(forget_before, 1e-30)
        weight_change = max(change, 0.0) ** 0.5 / max(float(weight.norm()), 1e-30)
        return LayerEdit(key, up, down, weight_change, forget_removed, retain_moved)


def edit_layer(key: str, weight: torch.Tensor, eraser: LowRankEraser, forget: torch.Tensor,
               retain: torch.Tensor | None = None, columns: int | None = None) -> LayerEdit:
    """:meth:`LayerMeasure.edit` of one layer."""
    return LayerMeasure(eraser, forget, retain).edit(key, weight, columns)


def edit_layers(weights: Mapping[str, torch.Tensor], eraser: LowRankEraser, forget: torch.Tensor,
                retain: torch.Tensor | None = None) -> list[LayerEdit]:
    """:meth:`LayerMeasure.edit` for every weight that reads the same embeddings (``down`` is shared)."""
    measure = LayerMeasure(eraser, forget, retain)
    return [measure.edit(key, weight) for key, weight in weights.items()]


def format_layer_table(edits: list[LayerEdit], prefix: str = "diffusion_model.") -> str:
    """One line per edited layer: weight change and forget output energy removed (retain change)."""
    lines = []
    for e in edits:
        name = e.key[len(prefix):] if e.key.startswith(prefix) else e.key
        name = name.removesuffix(".weight")
        retain = "" if e.retain_change is None else f", retained outputs moved {e.retain_change:6.2%}"
        lines.append(f"  {name}: weight changed {e.weight_change:6.2%}, forget energy removed "
                     f"{e.forget_removed:6.2%}{retain}")
    return "\n".join(lines)
