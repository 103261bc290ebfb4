"""Concept lists, templates, token selection and model families (pure Python, no ComfyUI)."""
import pytest
import torch

from cure_core.concepts import (DEFAULT_ALPHA, TEMPLATES, PromptTokens, expand, pair_rows, parse_concepts,
                                parse_templates, without_concept)
from cure_core.families import FAMILIES, family_for_config


def test_parse_concepts_one_per_line():
    assert parse_concepts("Van Gogh\n\n  Monet  \n# a comment\nVan Gogh\n") == ["Van Gogh", "Monet"]
    assert parse_concepts("   \n\n") == []


def test_templates_default_per_kind_and_validation():
    assert parse_templates("", "style") == TEMPLATES["style"]
    assert parse_templates("a {} photo\n{} art", "object") == ("a {} photo", "{} art")
    with pytest.raises(ValueError, match="exactly one"):
        parse_templates("no placeholder", "style")
    with pytest.raises(ValueError, match="Unknown concept kind"):
        parse_templates("", "landscape")
    assert DEFAULT_ALPHA["explicit content"] == 5.0 and DEFAULT_ALPHA["style"] == 2.0


def test_expand_is_every_concept_times_every_template():
    prompts = expand(["a", "b"], ("{}", "x {} y"))
    assert prompts == [("a", "", ""), ("a", "x ", " y"), ("b", "", ""), ("b", "x ", " y")]


def test_token_selection_modes():
    tokens = PromptTokens(concept=[4, 5], content=[1, 2, 3, 4, 5, 6], end=7)
    assert tokens.select("concept tokens") == [4, 5]
    assert tokens.select("concept + end token") == [4, 5, 7]
    assert tokens.select("all prompt tokens") == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="Unknown token selection"):
        tokens.select("middle")


def test_pair_rows_aligns_shared_tokens_and_the_differing_span():
    g = torch.Generator().manual_seed(0)
    safe = torch.randn(5, 4, generator=g)                    # ids: a woman on beach <end>
    inserted = torch.randn(1, 4, generator=g)                 # "nude"
    unsafe = torch.cat([safe[:1], inserted, safe[1:]])        # a nude woman on beach <end>
    unsafe[2:] += 1.0                                         # later tokens see the concept (causal encoder)
    u, s = pair_rows([1, 9, 2, 3, 4, 0], unsafe, [1, 2, 3, 4, 0], safe)
    assert u.shape == s.shape == (4, 4)                       # identical first token dropped; 4 shifted rows pair up
    assert torch.allclose(u - s, torch.ones(4, 4))
    u, s = pair_rows([1, 7, 0], torch.stack([safe[0], inserted[0], safe[4] + 1]), [1, 8, 0],
                     torch.stack([safe[0], safe[1], safe[4]]))  # a replaced word: span means pair up
    assert u.shape == (2, 4)


def test_a_span_only_the_prompt_with_the_concept_has_can_count_against_nothing():
    rows = torch.arange(12.0).reshape(4, 3)                 # <start> a painting <concept>, no end token
    u, s = pair_rows([1, 2, 3, 9], rows, [1, 2, 3], rows[:3])
    assert u.shape == (0, 3)                                  # the refusal's pairs: nothing to pair it with
    u, s = pair_rows([1, 2, 3, 9], rows, [1, 2, 3], rows[:3], added_span=True)
    assert torch.equal(u, rows[3:]) and torch.equal(s, torch.zeros(1, 3))


def test_the_template_without_the_concept():
    assert without_concept("a painting by ", "") == "a painting by"
    assert without_concept("a ", " shape") == "a shape"
    assert without_concept("", "") == ""


def test_family_lookup_names_the_supported_families():
    assert family_for_config("SD15").name == "SD1.x"
    assert family_for_config("SDXL").pooled is not None
    with pytest.raises(ValueError) as error:
        family_for_config("AuraFlow")
    for family in FAMILIES:
        assert family.name in str(error.value)


def test_text_layer_keys_match_cross_attention_only():
    keys = ["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_q.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight",
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.weight"]
    family = family_for_config("SD15")
    assert family.text_layer_keys(keys) == keys[:2]
    assert family.text_layer_keys(keys, "cross-attention keys only") == keys[:1]
    assert family.text_layer_keys(keys, "cross-attention values only") == keys[1:2]
    with pytest.raises(ValueError, match="does not apply"):
        family.text_layer_keys(keys, "queries")


def test_transformer_families_edit_their_first_text_layer_only():
    keys = ["diffusion_model.txt_in.weight", "diffusion_model.txt_in.bias", "diffusion_model.vector_in.in_layer.weight",
            "diffusion_model.double_blocks.0.txt_attn.qkv.weight"]
    flux = family_for_config("Flux")
    assert flux.text_layer_keys(keys) == ["diffusion_model.txt_in.weight"]
    with pytest.raises(ValueError, match="does not apply to Flux"):
        flux.text_layer_keys(keys, "cross-attention keys only")
    sd3 = family_for_config("SD3")
    assert sd3.text_layer_keys(["diffusion_model.context_embedder.weight", "diffusion_model.context_embedder.bias"]) \
        == ["diffusion_model.context_embedder.weight"]


def test_robust_context_templates_are_seeded_and_never_the_benchmark_words():
    """The robust mode's context words: drawn with a fixed seed, two templates per word (before the prompt and
    right after the concept), and none of them a word of the miniature world or of the benchmark's word search,
    so the benchmark's attacks never meet a word the defence was built on."""
    from benchmarks.miniworld import ATTACK_WORDS
    from cure_core.robust import CONTEXT_WORDS, MAX_CONTEXTS, context_templates
    from testbed.miniworld.scenes import ATTRIBUTES, TEMPLATES, VOCABULARY
    templates = ("{}", "a {} shape")
    made = context_templates(templates, 4)
    assert made == context_templates(templates, 4) and len(made) == 8
    assert all(t.count("{}") == 1 for t in made)
    words = [made[i].split(" ")[0] for i in range(0, 8, 2)]
    assert made[1] == "{} " + words[0] and made[2] == f"{words[1]} a {{}} shape" and made[3] == f"a {{}} {words[1]} shape"
    assert context_templates(templates, 0) == ()
    world = {w for a in ATTRIBUTES for names in VOCABULARY[a].values() for w in names}
    world |= {w.strip("{},") for t in TEMPLATES for w in t.split()}
    assert not (set(CONTEXT_WORDS) & (world | set(ATTACK_WORDS)))
    assert len(set(CONTEXT_WORDS)) == len(CONTEXT_WORDS) == MAX_CONTEXTS
