"""Concept presets: curated lists that the erase node accepts as they are, editable before use."""
import pytest
import torch

from conftest import REPO, pack_module
from cure_core.concepts import CONCEPT_KINDS
from cure_core.presets import PRESET_NAMES, PRESETS, resolve_preset


def test_presets_are_well_formed():
    assert set(PRESET_NAMES) == {"explicit content", "violence and gore", "artistic styles", "copyrighted characters",
                                 "trademarks", "warm colours"}
    for preset in PRESETS.values():
        assert preset.kind in CONCEPT_KINDS and preset.alpha_forget >= 1 and preset.alpha_retain >= 1
        assert preset.forget and preset.retain and all(t.count("{}") == 1 for t in preset.templates)
        assert not {c.lower() for c in preset.forget} & {c.lower() for c in preset.retain}
        assert len(set(preset.forget)) == len(preset.forget) and len(set(preset.retain)) == len(preset.retain)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_each_preset_erases_through_the_node(name, built, erase):
    model, clip = built("SD1.x")
    choice = resolve_preset(name)
    patched, report = erase(model, clip, choice.forget_concepts, choice.retain_concepts, choice.concept_kind,
                            choice.templates, choice.alpha_forget, choice.alpha_retain)
    assert patched.patches and model.patches == {}
    for concept in PRESETS[name].forget + PRESETS[name].retain:
        assert f"{concept} (" in report                 # every concept was encoded
    assert f"Forget (alpha {PRESETS[name].alpha_forget:g})" in report
    assert f"{len(PRESETS[name].templates)} template(s) per concept" in report


def test_a_preset_is_edited_before_use():
    choice = resolve_preset("artistic styles", add_forget="Claude Monet\nVan Gogh", add_retain="Monet's garden",
                            remove="Andy Warhol\nphotograph")
    forget, retain = choice.forget_concepts.splitlines(), choice.retain_concepts.splitlines()
    assert forget[-1] == "Claude Monet" and forget.count("Van Gogh") == 1 and "Andy Warhol" not in forget
    assert retain[-1] == "Monet's garden" and "photograph" not in retain
    assert choice.templates.splitlines() == list(PRESETS["artistic styles"].templates)
    with pytest.raises(ValueError, match="'Monet' is not in the 'artistic styles' preset"):
        resolve_preset("artistic styles", remove="Monet")
    with pytest.raises(ValueError, match="Nothing is left to forget"):
        resolve_preset("trademarks", remove="\n".join(PRESETS["trademarks"].forget))
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_preset("everything")


def test_the_nodes_reference_documents_every_preset():
    reference = (REPO / "docs" / "nodes.md").read_text()
    for preset in PRESETS.values():
        assert f"| {preset.name} |" in reference
        for concept in preset.forget + preset.retain:
            assert concept in reference, concept


def test_the_node_outputs_what_the_erase_node_inputs_take(pack):
    schema = pack_module("nodes.concept_preset").ConceptPreset.define_schema()
    assert schema.outputs[2].io_type == "COMBO"             # links to the erase node's concept_kind dropdown
    result = pack_module("nodes.concept_preset").ConceptPreset.execute("trademarks", "", "", "")
    assert result.result[0] == resolve_preset("trademarks").forget_concepts and result.result[4] == 2.0
    assert result.result[2] in CONCEPT_KINDS


def removed_per_concept(record, combination) -> dict[str, float]:
    """Each forget concept's share of its own rows' energy that the erasure removes, ``1 − ‖E_c (I − P)ᵀ‖² / ‖E_c‖²``,
    with ``P`` rebuilt from the rows the erasure stored, as the node builds it."""
    from cure_core.spectral import concept_set_eraser
    forget, retain = record.rows["forget"], record.rows.get("retain")
    eraser = concept_set_eraser(forget.rows.double(), forget.counts, None if retain is None else retain.rows.double(),
                                () if retain is None else retain.counts, float(record.recipe["alpha_forget"]),
                                float(record.recipe["alpha_retain"]), combination, dtype=torch.float64)
    shares, offset = {}, 0
    for concept, count in zip(forget.concepts, forget.counts):
        rows = forget.rows[offset:offset + count].double()
        kept = rows - (rows @ eraser.right.T) @ eraser.left.T
        shares[concept] = 1.0 - float(kept.pow(2).sum() / rows.pow(2).sum())
        offset += count
    return shares


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_erases_each_concept_as_strongly_as_that_concept_alone(name, built, erase):
    """Per concept, the share of its contribution the preset's one edit removes is within 3 points of what erasing
    that concept alone (with the same retain list) removes; the paper's single spectrum over the list falls short."""
    files = pack_module("comfy_glue.erasure_files")
    model, clip = built("SD1.x")
    choice = resolve_preset(name)
    arguments = (choice.concept_kind, choice.templates, choice.alpha_forget, choice.alpha_retain)
    record = lambda forget: files.erasures_on(erase(model, clip, forget, choice.retain_concepts, *arguments)[0])[0].record
    together = record(choice.forget_concepts)
    joint = removed_per_concept(together, "per concept (joint)")
    paper = removed_per_concept(together, "one spectrum (paper)")
    for concept in PRESETS[name].forget:
        alone = removed_per_concept(record(concept), "per concept (joint)")[concept]
        assert joint[concept] >= alone - 0.03, (concept, joint[concept], alone)
    assert min(paper[c] - removed_per_concept(record(c), "per concept (joint)")[c] for c in PRESETS[name].forget) < -0.03
