"""Import a ComfyUI checkout in-process and load this repository as ComfyUI loads a custom node pack.

Shared by the tests and the benchmarks. ``COMFYUI_DIR`` names the checkout (default: the one
``scripts/setup.sh`` unpacks into ``.comfyui/ComfyUI``).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_concept_erasure"


def comfyui_dir() -> Path:
    return Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui" / "ComfyUI")).resolve()


def load_pack(cpu: bool = True) -> ModuleType:
    """The pack imported under ``PACK_NAME``, with ComfyUI importable (on the CPU unless ``cpu`` is False)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    root = comfyui_dir()
    if not (root / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI found at {root}: run scripts/setup.sh or set COMFYUI_DIR.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args
    args.cpu = cpu
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def pack_module(name: str) -> ModuleType:
    """A submodule of the loaded pack, e.g. ``pack_module("nodes.tiny_models")``."""
    load_pack()
    return sys.modules[f"{PACK_NAME}.{name}"]
