"""Erasures as data: what an erase node computed, the file it is saved in, and the union of several.

An erasure is the low-rank update of every edited layer (``W' = W + strength · up @ down``) with
its recipe. A CURE erasure also keeps the encoder rows it was built from, grouped by concept, so
that two erasures can be merged into the one that erasing the union of their concepts gives: one
projector from the union of the forget (and retain) rows, not one edit after another (chained
edits accumulate cross terms; CURE reports drift from about 50 chained concepts).

File layout (``.safetensors``; every metadata value a string, as the format requires)::

    metadata  format = "concept-erasure", format_version = "1", family, base_weights_sha256,
              erasures = JSON list, one entry per erasure: recipe, strength, layers {key: down index},
              figures {key: [weight change, forget energy removed, retained outputs moved]},
              rows {set: {concepts, counts}}, spectra [names]
    tensors   erasure.<i>.up.<layer key>       [out, k]   (at strength 1)
              erasure.<i>.down.<j>             [k, in]    (shared by the layers that read the same rows; a
                                                           bias change has up [out, 1] and down [1, 1])
              erasure.<i>.rows.<set>           [n, d]     (forget, retain, pooled_forget, pooled_retain)
              erasure.<i>.spectrum.<name>      [k]        (forget/retain energy shares and expanded gains)
              base_fingerprint                 [layers, 8, 8]  (:mod:`.fingerprint` of the edited weights, in
                                                           ``keys`` order; files written before it have none)

Families whose edited layers read different encoder rows (HiDream: each caption projection its own
Llama layer or T5; Hunyuan-DiT: BERT or mT5) have one eraser per group of layers that read the same
rows: their forget and retain sets and spectra are stored per group, as ``<name>@<group>``
(``forget@t5xxl``, ``forget_energy@llama hidden layer 3``; see :func:`row_set_name`). The pooled
sets are one per model and keep their plain names.

No ComfyUI import: the nodes in ``nodes/erasure_files.py`` wrap this.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .spectral import ONE_SPECTRUM, spectral_factor

FORMAT = "concept-erasure"
FORMAT_VERSION = "1"
CURE_METHOD = "CURE spectral eraser"
ROW_SETS = ("forget", "retain", "pooled_forget", "pooled_retain")
# Recipe entries two CURE erasures must share to be merged into one projector.
UNION_SETTINGS = ("family", "alpha_forget", "alpha_retain", "token_selection", "layers", "erase_pooled", "combination",
                  "rows")
# The recipe's "rows": what the stored rows are. Today each concept's spectral factor of the rows as the edited
# layers read them (after a family's text norm); erasures saved before that stored the encoder's raw rows.
ROWS_AS_READ = "spectral factor per concept, as read"
RAW_ROWS = "encoder rows"
# What a setting was before the recipe recorded it (erasures saved before per-concept spectra existed).
SETTING_DEFAULTS = {"combination": ONE_SPECTRUM, "rows": RAW_ROWS, "robust_contexts": "0"}


def recipe_setting(recipe: dict[str, str], name: str) -> str | None:
    """A setting of a saved recipe, or what it was before recipes recorded it."""
    return recipe.get(name, SETTING_DEFAULTS.get(name))


GROUP_MARK = "@"


def row_set_name(name: str, group: str | None = None) -> str:
    """The stored name of a row set or spectrum (``forget``, ``retain_gains``...) of one group of layers:
    ``name`` itself when all the edited layers read the same rows (``group`` None)."""
    return name if group is None else f"{name}{GROUP_MARK}{group}"


def split_row_set_name(stored: str) -> tuple[str, str | None]:
    """Inverse of :func:`row_set_name`: ``(name, group or None)``."""
    name, mark, group = stored.partition(GROUP_MARK)
    return name, (group if mark else None)


@dataclass(frozen=True)
class ConceptRows:
    """Encoder rows of a concept set, concept after concept: ``counts[i]`` rows belong to ``concepts[i]``."""
    concepts: tuple[str, ...]
    counts: tuple[int, ...]
    rows: torch.Tensor                                   # [sum(counts), d]

    def __post_init__(self):
        if len(self.concepts) != len(self.counts) or sum(self.counts) != self.rows.shape[0] or self.rows.ndim != 2:
            raise ValueError(f"{len(self.concepts)} concepts with {sum(self.counts)} rows do not describe a "
                             f"{tuple(self.rows.shape)} matrix: the erasure data is damaged.")

    def compacted(self, alpha: float) -> ConceptRows:
        """Each concept's rows replaced by its :func:`~cure_core.spectral.spectral_factor`: the same spectra,
        projectors and figures at any α up to ``alpha`` (at least the node's largest), in a few rows instead of
        every padded row."""
        blocks = [spectral_factor(block, alpha) for block in torch.split(self.rows, list(self.counts))]
        return ConceptRows(self.concepts, tuple(b.shape[0] for b in blocks), torch.cat(blocks))

    def union(self, other: ConceptRows) -> ConceptRows:
        """These rows, then the rows of ``other``'s concepts that are not already here (first one wins)."""
        if other.rows.shape[1] != self.rows.shape[1]:
            raise ValueError(f"Cannot merge {self.rows.shape[1]}-wide rows with {other.rows.shape[1]}-wide rows: "
                             "the erasures were encoded by different text encoders.")
        concepts, counts, blocks = list(self.concepts), list(self.counts), [self.rows]
        offset = 0
        for concept, count in zip(other.concepts, other.counts):
            if concept not in concepts:
                concepts.append(concept)
                counts.append(count)
                blocks.append(other.rows[offset:offset + count].to(self.rows))
            offset += count
        return ConceptRows(tuple(concepts), tuple(counts), torch.cat(blocks))


@dataclass(frozen=True)
class LayerFigures:
    """What the edit does to one layer (the erase node's per-layer report)."""
    weight_change: float                 # ‖ΔW‖_F / ‖W‖_F
    forget_removed: float                # share of the forget rows' output energy removed
    retain_change: float | None          # ‖ΔW E_r‖ / ‖W E_r‖


@dataclass(frozen=True)
class ErasureRecord:
    """Everything about one erasure except its weights: shared by all the patches it made."""
    recipe: dict[str, str]
    figures: dict[str, LayerFigures] = field(default_factory=dict)
    rows: dict[str, ConceptRows] = field(default_factory=dict)        # CURE only: raw encoder rows per set
    spectra: dict[str, torch.Tensor] = field(default_factory=dict)    # CURE only: forget/retain energy, gains

    @property
    def mergeable(self) -> bool:
        return self.recipe.get("method") == CURE_METHOD and any(
            split_row_set_name(name)[0] == "forget" for name in self.rows)


@dataclass(frozen=True)
class Erasure:
    """One erasure as applied: the record, the patch strength, and ``key → (up, down)`` at strength 1."""
    record: ErasureRecord
    strength: float
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ErasureFile:
    family: str
    base_weights_sha256: str
    erasures: list[Erasure]
    base_fingerprint: torch.Tensor | None = None     # [len(keys), 8, 8]: the same checkpoint at any precision

    @property
    def keys(self) -> list[str]:
        return sorted({key for erasure in self.erasures for key in erasure.layers})


def number_text(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` ("2", "0.8"): recipes are rebuilt from it."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float32).contiguous().clone()


def to_state_dict(erasure_file: ErasureFile) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors and string metadata (see the module docstring for the layout)."""
    if not erasure_file.erasures:
        raise ValueError("An erasure file needs at least one erasure.")
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, erasure in enumerate(erasure_file.erasures):
        downs: dict[int, int] = {}          # id(down) -> index: layers reading the same rows share one
        layers = {}
        for key, (up, down) in erasure.layers.items():
            if id(down) not in downs:
                downs[id(down)] = len(downs)
                tensors[f"erasure.{i}.down.{downs[id(down)]}"] = _cpu(down)
            tensors[f"erasure.{i}.up.{key}"] = _cpu(up)
            layers[key] = downs[id(down)]
        for name, rows in erasure.record.rows.items():
            tensors[f"erasure.{i}.rows.{name}"] = _cpu(rows.rows)
        for name, values in erasure.record.spectra.items():
            tensors[f"erasure.{i}.spectrum.{name}"] = _cpu(values)
        entries.append({
            "recipe": erasure.record.recipe, "strength": erasure.strength, "layers": layers,
            "figures": {k: [f.weight_change, f.forget_removed, f.retain_change]
                        for k, f in erasure.record.figures.items()},
            "rows": {name: {"concepts": list(r.concepts), "counts": list(r.counts)}
                     for name, r in erasure.record.rows.items()},
            "spectra": list(erasure.record.spectra),
        })
    if erasure_file.base_fingerprint is not None:
        tensors["base_fingerprint"] = _cpu(erasure_file.base_fingerprint)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": erasure_file.family,
                "base_weights_sha256": erasure_file.base_weights_sha256, "erasures": json.dumps(entries)}
    return tensors, metadata


def from_state_dict(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, name: str = "file") -> ErasureFile:
    """Inverse of :func:`to_state_dict`; anything else gets an error that says what the file is not."""
    metadata = metadata or {}
    if metadata.get("format") != FORMAT:
        hint = (" It is a LoRA: load it with LoraLoaderModelOnly." if any(k.endswith("lora_up.weight") for k in tensors)
                else "")
        raise ValueError(f"{name} is not an erasure file written by Save Erasure.{hint}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name} has erasure format version {metadata.get('format_version')!r}; this pack reads "
                         f"version {FORMAT_VERSION}: update the pack.")
    try:
        entries = json.loads(metadata["erasures"])
        erasures = []
        for i, entry in enumerate(entries):
            downs = {}
            layers = {}
            for key, j in entry["layers"].items():
                if j not in downs:
                    downs[j] = tensors[f"erasure.{i}.down.{j}"]
                layers[key] = (tensors[f"erasure.{i}.up.{key}"], downs[j])
            rows = {set_name: ConceptRows(tuple(r["concepts"]), tuple(r["counts"]), tensors[f"erasure.{i}.rows.{set_name}"])
                    for set_name, r in entry["rows"].items()}
            spectra = {s: tensors[f"erasure.{i}.spectrum.{s}"] for s in entry["spectra"]}
            figures = {k: LayerFigures(*v) for k, v in entry["figures"].items()}
            record = ErasureRecord(dict(entry["recipe"]), figures, rows, spectra)
            erasures.append(Erasure(record, float(entry["strength"]), layers))
        result = ErasureFile(metadata["family"], metadata["base_weights_sha256"], erasures,
                             tensors.get("base_fingerprint"))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"{name} is a damaged erasure file ({type(error).__name__}: {error}): save it again.") from error
    for erasure in result.erasures:
        for key, (up, down) in erasure.layers.items():
            if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
                raise ValueError(f"{name} is a damaged erasure file: the factors of {key} do not multiply.")
    if not result.erasures:
        raise ValueError(f"{name} holds no erasure.")
    return result


def save_erasure_file(path: str | Path, erasure_file: ErasureFile) -> None:
    tensors, metadata = to_state_dict(erasure_file)
    save_file(tensors, str(path), metadata=metadata)


def load_erasure_file(path: str | Path) -> ErasureFile:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return from_state_dict(tensors, metadata, Path(path).name)


@dataclass(frozen=True)
class ErasureUnion:
    """What one CURE erasure of the union of several concept sets is built from."""
    recipe: dict[str, str]
    strength: float
    rows: dict[str, ConceptRows]


def _joined_lines(values: list[str]) -> str:
    lines: list[str] = []
    for value in values:
        for line in value.splitlines():
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)


def union_of(records_and_strengths: list[tuple[ErasureRecord, float]]) -> ErasureUnion:
    """The forget set, retain set and settings of one erasure of every concept of these CURE erasures.

    Rows are merged concept by concept (a concept in several erasures counts once), so the projector
    built from them is the one a single erase node call with the union of the concept lists builds.
    The settings that shape the projector (α, token selection, layers, pooled path) and the strength
    must agree: a merged erasure has one of each.
    """
    if not records_and_strengths:
        raise ValueError("Nothing to combine: give at least one erasure.")
    for record, _ in records_and_strengths:
        if not record.mergeable:
            raise ValueError(f"Only CURE erasures can be combined (this one is a {record.recipe.get('method')!r}): "
                             "chain its node instead.")
    first, strength = records_and_strengths[0]
    for record, other_strength in records_and_strengths[1:]:
        for setting in UNION_SETTINGS:
            mine, theirs = (recipe_setting(r.recipe, setting) for r in (first, record))
            if theirs != mine:
                raise ValueError(f"The erasures differ in {setting} ({mine!r} vs {theirs!r}): one merged projector "
                                 f"has one {setting}. "
                                 "Recompute one of them with the other's setting.")
        if not math.isclose(other_strength, strength, rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError(f"The erasures were applied at different strengths ({strength:g} vs {other_strength:g}): "
                             "combine erasures of the same strength.")
    rows: dict[str, ConceptRows] = {}
    for record, _ in records_and_strengths:
        for name, concept_rows in record.rows.items():      # per group of layers where there are several
            if split_row_set_name(name)[0] not in ROW_SETS:
                raise ValueError(f"Unknown row set {name!r} in a saved erasure: update the pack.")
            rows[name] = rows[name].union(concept_rows) if name in rows else concept_rows
    forget, retain = (tuple(dict.fromkeys(c for name, r in rows.items() if split_row_set_name(name)[0] == kind
                                          for c in r.concepts)) for kind in ("forget", "retain"))
    retained = {c.lower() for c in retain}
    both = [c for c in forget if c.lower() in retained]
    if both:
        raise ValueError(f"{', '.join(map(repr, both))} is forgotten by one erasure and retained by another: "
                         "they cannot be combined into one edit.")
    recipes = [record.recipe for record, _ in records_and_strengths]
    recipe = {**first.recipe,
              "forget": "\n".join(forget),
              "retain": "\n".join(retain),
              "concept_kind": ", ".join(dict.fromkeys(r.get("concept_kind", "") for r in recipes)),
              "templates": _joined_lines([r.get("templates", "") for r in recipes]),
              # each concept keeps the rows its own erasure read (robust or not): the union says which were which
              "robust_contexts": ", ".join(dict.fromkeys(recipe_setting(r, "robust_contexts") for r in recipes)),
              "strength": number_text(strength)}
    return ErasureUnion(recipe, strength, rows)
