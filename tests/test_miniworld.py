"""The miniature world (renderer, exact detector, prompts) and the UCE baseline."""
import random
import re

import numpy as np
import pytest
import torch

from testbed.miniworld.detector import detect, shows
from testbed.miniworld.scenes import (ATTRIBUTES, IMAGE_SIZE, NEIGHBOURS, TEMPLATES, VOCABULARY, Scene,
                                        all_concepts, chance_level, concept_attribute, prompt_for, random_scene,
                                        render)
from cure_core.uce import uce_eraser


def test_detector_reads_rendered_scenes_exactly():
    rng = random.Random(7)
    scenes = [random_scene(rng) for _ in range(1500)]
    found = [detect(render(s)) for s in scenes]
    for attribute in ATTRIBUTES:
        accuracy = np.mean([f[attribute] == s.value(attribute) for f, s in zip(found, scenes)])
        assert accuracy >= 0.99, (attribute, accuracy)
    every_value_seen = {s.value(a) for s in scenes for a in ATTRIBUTES}
    assert every_value_seen == set(all_concepts())


def test_detector_sees_no_shape_on_a_plain_background():
    blank = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 125 / 255, dtype=np.float32)
    assert detect(blank) == {"shape": None, "colour": None, "style": None, "background": "gray"}


def test_detector_tells_close_neighbours_apart():
    for concept, neighbour in (("red", "orange"), ("circle", "ring"), ("striped", "checkered"), ("square", "diamond")):
        attribute = concept_attribute(concept)
        base = {"shape": "square", "colour": "blue", "style": "solid", "background": "white"}
        for value in (concept, neighbour):
            picture = render(Scene(**{**base, attribute: value}, centre=(16.0, 16.0), radius=10.0))
            assert shows(detect(picture), value) and not shows(detect(picture), neighbour if value == concept else concept)


def test_detector_reads_through_what_a_generator_gets_wrong():
    """A generated picture is not a clean render: specks in the background, edge artifacts in the
    outermost pixels, a fill pattern shifted by a pixel. None of them changes what the picture shows."""
    rng = np.random.default_rng(0)
    base = Scene("star", "red", "striped", "gray", centre=(15.0, 16.0), radius=10.0)
    clean = render(base)
    expected = {a: base.value(a) for a in ATTRIBUTES}
    assert detect(clean) == expected
    specks = clean.copy()
    for y, x in ((1, 1), (2, 26), (27, 2), (27, 27)):     # blotches of another palette colour in the background
        specks[y:y + 3, x:x + 3] = (235 / 255, 215 / 255, 40 / 255)
    assert detect(specks) == expected
    shaded = render(Scene("circle", "red", "solid", "white", centre=(16.0, 16.0), radius=10.0))
    shaded[:, :13] = np.where(shaded[:, :13] < 0.9, shaded[:, :13] * 0.7, shaded[:, :13])   # a darker side
    assert detect(shaded)["style"] == "solid"
    frame = clean.copy()
    frame[0, :], frame[-1, :], frame[:, 0], frame[:, -1] = rng.uniform(0, 1, (4, IMAGE_SIZE, 3))
    assert detect(frame) == expected
    shifted = np.roll(clean, 1, axis=0)             # stripes one pixel off the renderer's phase
    assert detect(shifted) == expected
    checkered = render(Scene("square", "blue", "checkered", "white", centre=(16.0, 16.0), radius=10.0))
    assert detect(np.roll(checkered, (1, 1), axis=(0, 1)))["style"] == "checkered"
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1)
    assert detect(noisy) == expected


def test_vocabulary_neighbours_and_chance():
    for concept in all_concepts():
        attribute = concept_attribute(concept)
        assert NEIGHBOURS[concept] in VOCABULARY[attribute] and NEIGHBOURS[concept] != concept
        assert chance_level(concept) == pytest.approx(1 / len(VOCABULARY[attribute]))
    words = [w for a in ATTRIBUTES for ws in VOCABULARY[a].values() for w in ws]
    assert len(words) == len(set(words)), "a word names two concepts"
    with pytest.raises(KeyError, match="not a concept of the miniature world"):
        concept_attribute("purple-ish")


def test_prompts_name_exactly_the_given_attributes():
    assert prompt_for({"colour": "red"}, TEMPLATES[0]) == "a red shape"
    assert prompt_for({"colour": "red", "shape": "ring"}, TEMPLATES[1], {"red": "crimson"}) == "crimson ring"
    full = {"shape": "star", "colour": "pink", "style": "striped", "background": "sand"}
    for template in TEMPLATES:
        text = prompt_for(full, template)
        assert all(VOCABULARY[a][v][0] in re.findall(r"[a-z]+", text) for a, v in full.items()), text
        assert "{" not in text and "  " not in text and ", ," not in text


def test_uce_update_is_its_closed_form_solution():
    torch.manual_seed(0)
    d, out = 24, 16
    weight = torch.randn(out, d, dtype=torch.float64)
    forget, targets, preserve = torch.randn(5, d), torch.randn(5, d), torch.randn(9, d)
    lamb, es, ps = 0.3, 1.0, 0.7
    eraser = uce_eraser(forget, targets, preserve, lamb, es, ps, dtype=torch.float64)
    up, down = eraser.weight_update(weight)
    edited = weight + up @ down
    c, cs, p = forget.double().T, targets.double().T, preserve.double().T
    eye = torch.eye(d, dtype=torch.float64)
    expected = (lamb * weight + es * weight @ cs @ c.T + ps * weight @ p @ p.T) @ torch.linalg.inv(
        lamb * eye + es * c @ c.T + ps * p @ p.T)
    assert torch.allclose(edited, expected, atol=1e-9)
    assert eraser.rank == 5


def test_uce_rejects_mismatched_targets_and_bad_lambda():
    with pytest.raises(ValueError, match="one target row per forget row"):
        uce_eraser(torch.randn(3, 8), torch.randn(2, 8))
    with pytest.raises(ValueError, match="lamb must be > 0"):
        uce_eraser(torch.randn(3, 8), torch.randn(3, 8), lamb=0.0)


# ---- UCE through the node function, on ComfyUI's tiny SD1.x ---------------------------------------------

def test_uce_node_function_patches_text_layers_and_leaves_the_input_untouched(built, pack):
    from scripts.comfy_env import pack_module
    erase_uce = pack_module("comfy_glue.uce").erase_concepts_uce
    model, clip = built("SD1.x")
    keys = {k for k in model.model.state_dict() if "attn2.to_k" in k or "attn2.to_v" in k}
    before = {k: model.model.state_dict()[k].clone() for k in keys}
    patched, report = erase_uce(model, clip, "Van Gogh", "Claude Monet")
    assert report.startswith("UCE on SD1.x")
    assert set(patched.patches) == keys and keys
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in before.items()) and not model.patches
    with pytest.raises(ValueError, match="both erased and preserved"):
        erase_uce(model, clip, "Van Gogh", "van gogh")
    with pytest.raises(ValueError, match="No concept to forget"):
        erase_uce(model, clip, "  ")
