"""Save an erasure once, apply it later without the text encoder, and merge saved erasures into one: what
the **Save Erasure**, **Apply Erasure File** and **Combine Erasure Files** nodes do.

The files live in ``models/erasures`` (registered with ComfyUI's ``folder_paths`` as ``erasures``,
so ``extra_model_paths.yaml`` can add folders); their layout is :mod:`cure_core.erasure_file`.
"""
from __future__ import annotations

import os

import folder_paths

from ..cure_core.checks import check_strength
from ..cure_core.erasure_file import ErasureFile, load_erasure_file, number_text, save_erasure_file, union_of
from .cure import erase_rows
from .family import detect_family
from .patching import add_erasure, base_weights_sha256, erasures_on

FOLDER = "erasures"
EXTENSION = ".safetensors"


def register_folder() -> None:
    """``models/erasures`` as a ComfyUI model folder (kept after any folders ``extra_model_paths.yaml`` gave)."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, extensions = folder_paths.folder_names_and_paths[FOLDER]
        if default not in paths:
            paths.append(default)
        extensions.add(EXTENSION)
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], {EXTENSION})


register_folder()


def erasure_file_of(model) -> ErasureFile:
    """Every erasure patched onto ``model`` (from erase nodes, Apply Erasure File or Combine), as a file."""
    erasures = erasures_on(model)
    if not erasures:
        raise ValueError("This MODEL carries no erasure: connect the model output of an Erase Concepts node.")
    family = detect_family(model)
    keys = {key for erasure in erasures for key in erasure.layers}
    return ErasureFile(family.name, base_weights_sha256(model, keys), erasures)


def check_base_model(model, erasure_file: ErasureFile, name: str) -> None:
    """Refuse a file made for another model: family, then layer names and shapes, then the weights' hash."""
    family = detect_family(model)
    if erasure_file.family != family.name:
        raise ValueError(f"{name} was made for a {erasure_file.family} model, but this MODEL is {family.name}: "
                         "load the model the erasure was computed for.")
    state = model.model.state_dict()
    for erasure in erasure_file.erasures:
        for key, (up, down) in erasure.layers.items():
            if key not in state:
                raise ValueError(f"{name} edits {key}, which this {family.name} model does not have: it was made for "
                                 "another model of the family. Load the model the erasure was computed for.")
            weight_shape = tuple(state[key].shape)
            if weight_shape != (up.shape[0], down.shape[1]):
                raise ValueError(f"{name} edits {key} as a {up.shape[0]}x{down.shape[1]} weight, but this model's is "
                                 f"{weight_shape[0]}x{weight_shape[1]}: it was made for another model of the family.")
    digest = base_weights_sha256(model, erasure_file.keys)
    if digest != erasure_file.base_weights_sha256:
        raise ValueError(f"{name} was computed for other base weights (SHA-256 {erasure_file.base_weights_sha256[:12]}…, "
                         f"this model's {digest[:12]}…): apply it to the checkpoint it was made from, loaded at the "
                         "same precision, or erase the concepts again on this model with Erase Concepts.")


def _describe(erasure_file: ErasureFile, name: str) -> list[str]:
    lines = [f"{name}: {len(erasure_file.erasures)} erasure(s) for {erasure_file.family}, base weights verified "
             f"(SHA-256 {erasure_file.base_weights_sha256[:12]}…)"]
    for erasure in erasure_file.erasures:
        recipe = erasure.record.recipe
        what = recipe.get("forget") or recipe.get("pairs", "")
        lines.append(f"  {recipe.get('method')}: {what.replace(chr(10), ', ')}; {len(erasure.layers)} layers, "
                     f"saved at strength {erasure.strength:g}")
    return lines


def apply_erasure_file(model, erasure_file: ErasureFile, strength: float = 1.0, name: str = "The erasure file"):
    """``(patched clone, report)``: the file's patches on ``model`` at ``strength`` × the saved strength."""
    strength = check_strength(strength)
    check_base_model(model, erasure_file, name)
    patched = model
    for erasure in erasure_file.erasures:
        patched = add_erasure(patched, erasure.layers, erasure.strength * strength, erasure.record)
    report = _describe(erasure_file, name) + [f"Applied at {strength:g} × the saved strength."]
    return patched, "\n".join(report)


def combine_erasure_files(model, named_files: list[tuple[str, ErasureFile]], strength: float = 1.0):
    """``(patched clone, report)``: ONE CURE erasure of the union of the files' concept sets on ``model``,
    the same as erasing all their concepts in one Erase Concepts call (not one edit after another)."""
    strength = check_strength(strength)
    for name, erasure_file in named_files:
        check_base_model(model, erasure_file, name)
    union = union_of([(e.record, e.strength) for _, f in named_files for e in f.erasures])
    recipe = {**union.recipe, "strength": number_text(union.strength * strength)}
    family = detect_family(model)
    keys = family.text_layer_keys(model.model.state_dict().keys(), recipe["layers"])
    patched, report = erase_rows(model, family, keys, union.rows, recipe, recipe["erase_pooled"] == "True")
    sources = " and ".join(name for name, _ in named_files)
    return patched, f"Combined {sources} into one erasure of the union of their concepts.\n{report}"


def erasure_file_names() -> list[str]:
    """The erasure files ComfyUI finds in its ``erasures`` folders (the nodes' dropdowns)."""
    return folder_paths.get_filename_list(FOLDER)


def load_named(name: str) -> ErasureFile:
    """An erasure file by the name the dropdowns show."""
    return load_erasure_file(folder_paths.get_full_path_or_raise(FOLDER, name))


def save_to_folder(model, filename_prefix: str) -> tuple[str, str]:
    """Write the erasures on ``model`` to the first ``erasures`` folder: ``(path, message)``."""
    erasure_file = erasure_file_of(model)
    folder = folder_paths.get_folder_paths(FOLDER)[0]
    os.makedirs(folder, exist_ok=True)
    full_folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder)
    path = os.path.join(full_folder, f"{filename}_{counter:05}_{EXTENSION}")
    save_erasure_file(path, erasure_file)
    message = (f"Saved {len(erasure_file.erasures)} erasure(s) of {len(erasure_file.keys)} layers to {path} "
               f"({os.path.getsize(path) / 2**20:.2f} MiB)")
    return path, message
