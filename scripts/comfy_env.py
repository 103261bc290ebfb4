"""Import a ComfyUI checkout in-process and load this repository as ComfyUI loads a custom node pack.

Shared by the tests, the benchmarks and the command line (``scripts/erase.py``). ``COMFYUI_DIR``
names the checkout; by default it is the one ``scripts/setup.sh`` unpacks into ``.comfyui/ComfyUI``,
else the ComfyUI whose ``custom_nodes/`` holds this pack.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_concept_erasure"


def comfyui_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$COMFYUI_DIR``, else ``.comfyui/ComfyUI``, else the ComfyUI this pack is installed in."""
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]).resolve()
    local = REPO / ".comfyui" / "ComfyUI"
    enclosing = REPO.parent.parent           # <ComfyUI>/custom_nodes/<this pack>
    if not (local / "comfy").is_dir() and REPO.parent.name == "custom_nodes" and (enclosing / "comfy").is_dir():
        return enclosing
    return local.resolve()


def load_pack(cpu: bool = True, comfyui: str | Path | None = None) -> ModuleType:
    """The pack imported under ``PACK_NAME``, with ComfyUI (``comfyui_dir(comfyui)``) importable, on
    the CPU unless ``cpu`` is False."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    root = comfyui_dir(comfyui)
    if not (root / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI found at {root}: run scripts/setup.sh, set COMFYUI_DIR or pass the "
                           "ComfyUI folder (the one with main.py).")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args
    args.cpu = cpu
    return _import_package(PACK_NAME, REPO)


def _import_package(name: str, folder: Path) -> ModuleType:
    """``folder`` imported as the package ``name``, as ComfyUI imports a custom node folder."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pack_module(name: str) -> ModuleType:
    """A submodule of the loaded pack, e.g. ``pack_module("testbed.tiny_models")``."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.{name}")


def load_installed_pack(folder: str) -> ModuleType:
    """Another custom node pack installed in the ComfyUI's ``custom_nodes/`` (``scripts/setup.sh`` installs
    ComfyUI-GGUF there), imported as ComfyUI imports it: under its folder name, as a package."""
    load_pack()
    if folder in sys.modules:
        return sys.modules[folder]
    path = comfyui_dir() / "custom_nodes" / folder
    if not (path / "__init__.py").is_file():
        raise RuntimeError(f"{folder} is not installed in {path.parent}: run scripts/setup.sh (it installs the "
                           "packs the interoperability tests use).")
    return _import_package(folder, path)
