"""Save an erasure once, apply it later without the text encoder, and merge saved erasures into one: what
the **Save Erasure**, **Apply Erasure File** and **Combine Erasure Files** nodes do.

The files live in ``models/erasures`` (registered with ComfyUI's ``folder_paths`` as ``erasures``,
so ``extra_model_paths.yaml`` can add folders); their layout is :mod:`cure_core.erasure_file`.
"""
from __future__ import annotations

import os

import folder_paths
import torch

from ..cure_core.checks import check_choice, check_strength
from ..cure_core.erasure_file import ErasureFile, load_erasure_file, number_text, save_erasure_file, union_of
from ..cure_core.fingerprint import SAME_CHECKPOINT_TOLERANCE, relative_differences
from .cure import erase_rows
from .family import detect_family
from .patching import add_erasure, base_weights_identity, erasures_on, is_bias, layer_count
from .weights import weight_shape

FOLDER = "erasures"
EXTENSION = ".safetensors"
# How Apply and Combine Erasure Files check the base model (the nodes' "base_check" input).
EXACT_WEIGHTS = "same weights (exact)"
ANY_PRECISION = "same checkpoint, any precision"
BASE_CHECKS = (EXACT_WEIGHTS, ANY_PRECISION)


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
    digest, fingerprint = base_weights_identity(model, {key for erasure in erasures for key in erasure.layers})
    return ErasureFile(family.name, digest, erasures, fingerprint)


def check_base_model(model, erasure_file: ErasureFile, name: str, base_check: str = EXACT_WEIGHTS) -> str:
    """Refuse a file made for another model: family, then layer names and shapes, then the weights (their exact
    hash, or with ``ANY_PRECISION`` their fingerprint within quantization's error). Returns what was verified."""
    check_choice(base_check, BASE_CHECKS, "base check")
    family = detect_family(model)
    if erasure_file.family != family.name:
        raise ValueError(f"{name} was made for a {erasure_file.family} model, but this MODEL is {family.name}: "
                         "load the model the erasure was computed for.")
    state_keys = model.model.state_dict().keys()
    for erasure in erasure_file.erasures:
        for key, (up, down) in erasure.layers.items():
            if key not in state_keys:
                raise ValueError(f"{name} edits {key}, which this {family.name} model does not have: it was made for "
                                 "another model of the family. Load the model the erasure was computed for.")
            shape = weight_shape(model, key)
            expected = (up.shape[0],) if is_bias(key) else (up.shape[0], down.shape[1])
            if shape != expected:
                kind = "bias" if is_bias(key) else "weight"
                raise ValueError(f"{name} edits {key} as a {'x'.join(map(str, expected))} {kind}, but this model's is "
                                 f"{'x'.join(map(str, shape))}: it was made for another model of the family.")
    digest, fingerprint = base_weights_identity(model, erasure_file.keys)
    if base_check == ANY_PRECISION:
        return _check_same_checkpoint(erasure_file, fingerprint, name)
    if digest != erasure_file.base_weights_sha256:
        raise ValueError(f"{name} was computed for other base weights (SHA-256 {erasure_file.base_weights_sha256[:12]}…, "
                         f"this model's {digest[:12]}…): apply it to the checkpoint it was made from, loaded the same "
                         f"way. If this is the same checkpoint in another format or precision (scaled fp8, GGUF, fp8 "
                         f"weight_dtype), set base_check to '{ANY_PRECISION}'; otherwise erase the concepts again on "
                         "this model with Erase Concepts.")
    return f"base weights verified (SHA-256 {erasure_file.base_weights_sha256[:12]}…)"


def _check_same_checkpoint(erasure_file: ErasureFile, fingerprint: torch.Tensor, name: str) -> str:
    """The model's weight fingerprints within ``SAME_CHECKPOINT_TOLERANCE`` of the file's, layer by layer."""
    if erasure_file.base_fingerprint is None:
        raise ValueError(f"{name} was saved before erasure files carried a precision-independent fingerprint, so only "
                         f"'{EXACT_WEIGHTS}' can check it: save it again from the model it was made on.")
    differences = relative_differences(fingerprint, erasure_file.base_fingerprint)
    worst = int(differences.argmax())
    if float(differences[worst]) > SAME_CHECKPOINT_TOLERANCE:
        raise ValueError(f"{name} was computed for other base weights: {erasure_file.keys[worst]} differs by "
                         f"{float(differences[worst]):.0%} (quantization changes a weight by a few per cent, at most "
                         f"{SAME_CHECKPOINT_TOLERANCE:.0%} here). Load the checkpoint it was made from, or erase the "
                         "concepts again on this model with Erase Concepts.")
    return (f"same checkpoint at any precision: base weights within {float(differences.max()):.1%} of the file's "
            f"(largest difference, {erasure_file.keys[worst].removesuffix('.weight')})")


def _describe(erasure_file: ErasureFile, name: str, verified: str) -> list[str]:
    lines = [f"{name}: {len(erasure_file.erasures)} erasure(s) for {erasure_file.family}, {verified}"]
    for erasure in erasure_file.erasures:
        recipe = erasure.record.recipe
        what = recipe.get("forget") or recipe.get("pairs", "")
        lines.append(f"  {recipe.get('method')}: {what.replace(chr(10), ', ')}; {layer_count(erasure.layers)} layers, "
                     f"saved at strength {erasure.strength:g}")
    return lines


def apply_erasure_file(model, erasure_file: ErasureFile, strength: float = 1.0, name: str = "The erasure file",
                       base_check: str = EXACT_WEIGHTS):
    """``(patched clone, report)``: the file's patches on ``model`` at ``strength`` × the saved strength."""
    strength = check_strength(strength)
    verified = check_base_model(model, erasure_file, name, base_check)
    patched = model
    for erasure in erasure_file.erasures:
        patched = add_erasure(patched, erasure.layers, erasure.strength * strength, erasure.record)
    report = _describe(erasure_file, name, verified) + [f"Applied at {strength:g} × the saved strength."]
    return patched, "\n".join(report)


def combine_erasure_files(model, named_files: list[tuple[str, ErasureFile]], strength: float = 1.0,
                          base_check: str = EXACT_WEIGHTS):
    """``(patched clone, report)``: ONE CURE erasure of the union of the files' concept sets on ``model``,
    the same as erasing all their concepts in one Erase Concepts call (not one edit after another)."""
    strength = check_strength(strength)
    for name, erasure_file in named_files:
        check_base_model(model, erasure_file, name, base_check)
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
    message = (f"Saved {len(erasure_file.erasures)} erasure(s) of {layer_count(erasure_file.keys)} layers to {path} "
               f"({os.path.getsize(path) / 2**20:.2f} MiB)")
    return path, message
