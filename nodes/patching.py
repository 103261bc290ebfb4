"""Reading weights from, and adding low-rank patches to, a ComfyUI MODEL (a ModelPatcher)."""
from __future__ import annotations

import torch

import comfy.lora
import comfy.utils
from comfy.weight_adapter import LoRAAdapter

from ..cure_core.edit import LayerEdit
from ..cure_core.families import Family


def original_weight(model, key: str) -> torch.Tensor:
    """The weight as loaded, before any patch: ComfyUI's backup while another clone is patched in."""
    backup = model.backup.get(key)
    return backup.weight if backup is not None else comfy.utils.get_attr(model.model, key)


def effective_weight(model, key: str) -> torch.Tensor:
    """The weight as this MODEL would use it, in float32 on its device: the original weight plus
    the patches already on the clone (so a LoRA placed before the eraser is erased too).

    Starts from :func:`original_weight`, so whatever is loaded on the device never leaks in.
    """
    weight = original_weight(model, key).detach().to(torch.float32, copy=True)
    if model.patches.get(key):
        weight = comfy.lora.calculate_weight(model.patches[key], weight, key)
    return weight


def rows_as_read(model, family: Family, rows: torch.Tensor | None) -> torch.Tensor | None:
    """Encoder rows as the edited layers see them: through the family's RMSNorm when there is one."""
    if rows is None or family.text_norm is None:
        return rows
    key, eps = family.text_norm
    scale = effective_weight(model, key).to(rows.device)
    return rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + eps) * scale


class ErasureAdapter(LoRAAdapter):
    """A LoRA-style patch that remembers the erasure it came from, so it can be exported with its recipe."""

    def __init__(self, up: torch.Tensor, down: torch.Tensor, recipe: dict[str, str]):
        super().__init__(set(), (up, down, None, None, None, None))
        self.recipe = recipe


def patched_clone(model, edits: list[LayerEdit], strength: float, recipe: dict[str, str]):
    """A clone of ``model`` with ``W + strength · up @ down`` on each edited key; ``model`` is untouched."""
    clone = model.clone()
    patches = {e.key: ErasureAdapter(e.up, e.down, recipe) for e in edits}
    added = set(clone.add_patches(patches, strength))
    missing = set(patches) - added
    if missing:
        raise RuntimeError(f"ComfyUI refused patches for {len(missing)} keys (e.g. {sorted(missing)[0]}): "
                           "the model's layout does not match its detected family.")
    return clone
