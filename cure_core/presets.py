"""Curated concept lists for common erasures: what to forget, what to keep, templates and α.

A preset is a starting point, not a guarantee: the lists name the concepts a text encoder knows by
name; a concept a model draws without being named (an artist's look under another name) needs its
own entries. The α values follow CURE (2 for styles, objects and identities, 5 for explicit
content); violence and gore use 5 like explicit content (our choice). Retain sets hold the nearby,
harmless concepts the erasure should spare.
"""
from __future__ import annotations

from dataclasses import dataclass

from .checks import check_choice
from .concepts import parse_concepts


@dataclass(frozen=True)
class ConceptPreset:
    name: str
    kind: str                         # one of CONCEPT_KINDS (what the report calls it)
    forget: tuple[str, ...]
    retain: tuple[str, ...]
    templates: tuple[str, ...]        # each with one {} for the concept
    alpha_forget: float
    alpha_retain: float
    summary: str


PRESETS: dict[str, ConceptPreset] = {p.name: p for p in (
    ConceptPreset(
        "explicit content", "explicit content",
        forget=("nudity", "naked body", "nude", "sexual content", "pornography", "erotic", "topless", "genitals"),
        retain=("person", "portrait", "clothing", "fashion", "swimsuit"),
        templates=("{}", "a photo of {}", "an image showing {}", "a picture with {}"),
        alpha_forget=5.0, alpha_retain=5.0,
        summary="Nudity and sexual content (CURE's α = 5); keeps people, portraits and clothing."),
    ConceptPreset(
        "violence and gore", "explicit content",
        forget=("violence", "gore", "blood", "bloody wound", "corpse", "murder", "torture", "mutilation"),
        retain=("red paint", "ketchup", "martial arts", "a doctor", "a soldier"),
        templates=("{}", "a photo of {}", "a scene of {}", "a movie still showing {}"),
        alpha_forget=5.0, alpha_retain=5.0,
        summary="Graphic violence and gore (α = 5 as for explicit content); keeps red things, sport, "
                "medicine and soldiers."),
    ConceptPreset(
        "artistic styles", "style",
        forget=("Van Gogh", "Pablo Picasso", "Salvador Dali", "Andy Warhol", "Rembrandt", "Caravaggio",
                "Frida Kahlo", "Greg Rutkowski", "Thomas Kinkade", "Kelly McKernan"),
        retain=("painting", "artwork", "landscape painting", "portrait painting", "photograph"),
        templates=("{}", "a painting in the style of {}", "an artwork by {}", "a picture in the style of {}"),
        alpha_forget=2.0, alpha_retain=2.0,
        summary="Ten artists whose names are common in prompts (classic and living); keeps painting as such."),
    ConceptPreset(
        "copyrighted characters", "identity",
        forget=("Mickey Mouse", "Spider-Man", "Pikachu", "Darth Vader", "Super Mario", "Elsa from Frozen",
                "Batman", "Superman", "Shrek", "Sonic the Hedgehog", "Homer Simpson", "Harry Potter"),
        retain=("cartoon character", "mouse", "superhero", "robot", "princess"),
        templates=("{}", "a picture of {}", "a cartoon of {}", "an illustration of {}"),
        alpha_forget=2.0, alpha_retain=2.0,
        summary="Twelve well-known franchise characters; keeps generic cartoon characters, animals and heroes."),
    ConceptPreset(
        "trademarks", "object",
        forget=("Coca-Cola", "Nike", "McDonald's", "Starbucks", "Adidas", "Pepsi", "Disney", "Ferrari",
                "Mercedes-Benz", "Louis Vuitton"),
        retain=("soda bottle", "sneakers", "coffee cup", "sports car", "handbag", "restaurant sign"),
        templates=("{}", "the {} logo", "a product with the {} logo", "a sign of {}"),
        alpha_forget=2.0, alpha_retain=2.0,
        summary="Ten brand names and their logos; keeps the products themselves."),
    ConceptPreset(
        "warm colours", "object",
        forget=("red", "orange", "yellow", "pink", "brown"),
        retain=("lime", "purple"),
        templates=("{}", "a {} shape", "a drawing of a {} shape"),
        alpha_forget=2.0, alpha_retain=2.0,
        summary="The miniature world's warm colours (for the Miniature World Model and its benchmark); keeps "
                "lime and purple, the cool neighbours of yellow and pink."),
)}
PRESET_NAMES = tuple(PRESETS)


@dataclass(frozen=True)
class PresetChoice:
    """What the Concept Preset node hands to Erase Concepts (CURE), as its text inputs expect them."""
    forget_concepts: str
    retain_concepts: str
    concept_kind: str
    templates: str
    alpha_forget: float
    alpha_retain: float


def resolve_preset(name: str, add_forget: str = "", add_retain: str = "", remove: str = "") -> PresetChoice:
    """The preset's lists with the user's additions (one per line) and without the lines of ``remove``."""
    check_choice(name, PRESET_NAMES, "preset")
    preset = PRESETS[name]
    removed = parse_concepts(remove)
    known = {c.lower() for c in preset.forget + preset.retain}
    unknown = [c for c in removed if c.lower() not in known]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} is not in the {name!r} preset, so it cannot be removed. "
                         f"Its concepts: {', '.join(preset.forget + preset.retain)}.")
    drop = {c.lower() for c in removed}
    forget = [c for c in preset.forget if c.lower() not in drop]
    retain = [c for c in preset.retain if c.lower() not in drop]
    forget += [c for c in parse_concepts(add_forget) if c not in forget]
    retain += [c for c in parse_concepts(add_retain) if c not in retain]
    if not forget:
        raise ValueError(f"Nothing is left to forget: every concept of the {name!r} preset was removed and none added.")
    return PresetChoice("\n".join(forget), "\n".join(retain), preset.kind, "\n".join(preset.templates),
                        preset.alpha_forget, preset.alpha_retain)
