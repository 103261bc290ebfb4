"""Closed-form concept erasure for text-conditioned diffusion models, with no ComfyUI import.

Use on its own (rows of every matrix are embeddings)::

    from cure_core.spectral import low_rank_eraser
    from cure_core.edit import edit_layers

    eraser = low_rank_eraser(forget_rows, retain_rows, alpha_forget=2.0, alpha_retain=2.0)
    for e in edit_layers({"to_k": W_k, "to_v": W_v}, eraser, forget_rows, retain_rows):
        W_new = weights[e.key] + e.up @ e.down          # W (I - P_dis)

Modules: :mod:`.spectral` (the math), :mod:`.edit` (per-layer low-rank updates and their
measures), :mod:`.concepts` (concept lists, templates, token selection),
:mod:`.families` (which layers read text in each model family), :mod:`.refusal` (the low-rank
refusal vector), :mod:`.erasure_file` (saved erasures and the union of several), :mod:`.presets`
(curated concept lists).
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

DISTRIBUTION = "comfyui-concept-erasure"


def _version() -> str:
    """The pack's version from its one source, ``[project] version`` in pyproject.toml (ComfyUI,
    ComfyUI-Manager and the Comfy Registry read it there); from the installed metadata when the
    package was installed without its pyproject.toml beside it."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        table = None
        for line in pyproject.read_text(encoding="utf-8").splitlines():
            header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
            if header:
                table = header.group(1).strip()
            elif table == "project":
                match = re.match(r'\s*version\s*=\s*"([^"]+)"', line)
                if match:
                    return match.group(1)
    return importlib.metadata.version(DISTRIBUTION)


__version__ = _version()
