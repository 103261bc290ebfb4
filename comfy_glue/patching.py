"""Reading weights from, and adding low-rank patches to, a ComfyUI MODEL (a ModelPatcher)."""
from __future__ import annotations

import hashlib

import torch

from comfy.weight_adapter import LoRAAdapter

from ..cure_core.edit import LayerEdit
from ..cure_core.erasure_file import ConceptRows, Erasure, ErasureRecord, LayerFigures
from ..cure_core.families import Family
from ..cure_core.fingerprint import weight_fingerprint
from .weights import base_weight, effective_weight


def rows_as_read(model, family: Family, rows: torch.Tensor | None) -> torch.Tensor | None:
    """Encoder rows as the edited layers see them: through the family's RMSNorm when there is one."""
    if rows is None or family.text_norm is None:
        return rows
    key, eps = family.text_norm
    scale = effective_weight(model, key).to(rows.device)
    return rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + eps) * scale


def base_weights_identity(model, keys) -> tuple[str, torch.Tensor]:
    """``(SHA-256, fingerprint)`` of the named weights as loaded (before any patch) and as the model computes with
    them (scaled, quantized and GGUF weights dequantized), each weight read once, in sorted key order.

    The SHA-256 (of the float32 values) identifies the base model an erasure was computed for, whether the same
    checkpoint is loaded in fp16 or fp32; a quantized copy computes with other values, so it has another hash.
    The fingerprint (:func:`cure_core.fingerprint.weight_fingerprint` per weight, ``[len(keys), 8, 8]``) is the
    same for a checkpoint and its quantized copies, within their error (see ``erasure_files.check_base_model``)."""
    digest = hashlib.sha256()
    fingerprints = []
    for key in sorted(keys):
        weight = base_weight(model, key).to("cpu")
        digest.update(key.encode())
        digest.update(weight.contiguous().numpy().tobytes())
        fingerprints.append(weight_fingerprint(weight))
    return digest.hexdigest(), torch.stack(fingerprints)


class ErasureAdapter(LoRAAdapter):
    """A LoRA-style patch that remembers the erasure it came from (recipe, rows, per-layer figures), so
    that it can be exported, saved as an erasure file, merged with others and plotted."""

    def __init__(self, up: torch.Tensor, down: torch.Tensor, record: ErasureRecord):
        super().__init__(set(), (up, down, None, None, None, None))
        self.record = record

    @property
    def recipe(self) -> dict[str, str]:
        return self.record.recipe


def is_bias(key: str) -> bool:
    """A bias patch of an erasure (the refusal vector's mean shift), beside the weight patches."""
    return key.endswith(".bias")


def layer_count(keys) -> int:
    """How many layers the patch ``keys`` edit: a bias change belongs to its layer, whose weight is edited too."""
    return sum(not is_bias(key) for key in keys)


def bias_factors(change: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias change as the ``(up, down)`` an :class:`ErasureAdapter` carries, ``[out, 1] @ [1, 1]``: ComfyUI's LoRA
    arithmetic reshapes the product onto the 1-D bias, and erasure files, baking and the LoRA export then carry it
    like a weight's patch."""
    return change.reshape(-1, 1).contiguous(), torch.ones(1, 1, dtype=change.dtype, device=change.device)


def add_erasure(model, layers: dict[str, tuple[torch.Tensor, torch.Tensor]], strength: float, record: ErasureRecord):
    """A clone of ``model`` with ``W + strength · up @ down`` on each key of ``layers``; ``model`` is untouched."""
    clone = model.clone()
    patches = {key: ErasureAdapter(up, down, record) for key, (up, down) in layers.items()}
    added = set(clone.add_patches(patches, strength))
    missing = set(patches) - added
    if missing:
        raise RuntimeError(f"ComfyUI refused patches for {len(missing)} keys (e.g. {sorted(missing)[0]}): "
                           "the model's layout does not match its detected family.")
    return clone


def patched_clone(model, edits: list[LayerEdit], strength: float, recipe: dict[str, str],
                  rows: dict[str, ConceptRows] | None = None, spectra: dict[str, torch.Tensor] | None = None,
                  bias_changes: dict[str, torch.Tensor] | None = None):
    """:func:`add_erasure` of the edits of one erase node call (and of the bias changes that go with them, keyed by
    the bias' state-dict key), with their record."""
    figures = {e.key: LayerFigures(e.weight_change, e.forget_removed, e.retain_change) for e in edits}
    record = ErasureRecord(recipe, figures, rows or {}, spectra or {})
    layers = {e.key: (e.up, e.down) for e in edits}
    layers.update({key: bias_factors(change) for key, change in (bias_changes or {}).items()})
    return add_erasure(model, layers, strength, record)


def erasures_on(model) -> list[Erasure]:
    """The erasures patched onto ``model``, in the order they were applied (other patches are skipped)."""
    found: dict[int, Erasure] = {}
    for key, patch_list in model.patches.items():
        for strength_patch, adapter, strength_model, offset, function in patch_list:
            if not isinstance(adapter, ErasureAdapter):
                continue
            if strength_model != 1.0 or offset is not None or function is not None:
                raise ValueError(f"The erasure patch on {key} is scaled or offset by another node; use the MODEL "
                                 "straight from an erase node (or Apply Erasure File).")
            erasure = found.setdefault(id(adapter.record), Erasure(adapter.record, float(strength_patch), {}))
            if key in erasure.layers or strength_patch != erasure.strength:
                raise ValueError(f"The same erasure is patched onto {key} twice or at two strengths: this MODEL was "
                                 "assembled by another node; use the MODEL straight from an erase node.")
            erasure.layers[key] = tuple(adapter.weights[:2])
    return list(found.values())
