"""Erasure files: saved once, applied to the same base model without the CLIP, merged by the union of
their concept sets (one projector), and refused on any other model."""
import pytest
import torch

from conftest import pack_module
from test_comfy_erase import loaded_weights
from test_export import PAIRS


@pytest.fixture(scope="module")
def files(pack):
    return pack_module("comfy_glue.erasure_files")


@pytest.fixture(scope="module")
def layout(pack):
    """The pack's own copy of the library module (its classes are the ones the nodes compare against)."""
    return pack_module("cure_core.erasure_file")


def saved(files, patched, tmp_path, name):
    """What Save Erasure writes, read back from disk."""
    path = tmp_path / f"{name}.safetensors"
    layout = pack_module("cure_core.erasure_file")
    layout.save_erasure_file(path, files.erasure_file_of(patched))
    return layout.load_erasure_file(path)


def assert_same_weights(comfy, expected_model, model, keys, tolerance=1e-5):
    expected, got = loaded_weights(comfy, expected_model, keys), loaded_weights(comfy, model, keys)
    for key in keys:
        assert torch.allclose(expected[key], got[key], atol=tolerance, rtol=1e-4), key


@pytest.mark.parametrize("family", ["SD1.x", "SDXL"])
def test_combined_files_equal_one_erasure_of_the_union(family, built, erase, files, comfy, tmp_path):
    model, clip = built(family)
    pooled = family == "SDXL"
    first, _ = erase(model, clip, "Van Gogh", "Claude Monet", erase_pooled=pooled)
    second, _ = erase(model, clip, "Starry Night\nVan Gogh", "watercolor", erase_pooled=pooled)
    file_a, file_b = saved(files, first, tmp_path, "a"), saved(files, second, tmp_path, "b")
    combined, report = files.combine_erasure_files(model, [("a", file_a), ("b", file_b)])
    at_once, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet\nwatercolor", erase_pooled=pooled)
    keys = sorted(at_once.patches)
    assert sorted(combined.patches) == keys and all(len(p) == 1 for p in combined.patches.values())
    assert_same_weights(comfy, at_once, combined, keys)
    recipe = files.erasures_on(combined)[0].record.recipe
    assert recipe["forget"] == "Van Gogh\nStarry Night" and recipe["retain"] == "Claude Monet\nwatercolor"
    assert "Combined a and b" in report and "CURE Spectral Eraser" in report
    # Not what chaining the two edits gives: that is the point of storing the rows.
    chained, _ = erase(first, clip, "Starry Night\nVan Gogh", "watercolor", erase_pooled=pooled)
    union, chain = loaded_weights(comfy, at_once, keys), loaded_weights(comfy, chained, keys)
    assert max(float((union[k] - chain[k]).abs().max()) for k in keys) > 1e-3
    # The combined erasure is saved like any other, and combines again.
    again = saved(files, combined, tmp_path, "ab")
    assert again.erasures[0].record.rows["forget"].concepts == ("Van Gogh", "Starry Night")
    if pooled:
        assert "pooled_forget" in again.erasures[0].record.rows


def test_a_robust_and_a_plain_erasure_combine_each_concept_as_it_was_read(built, erase, files, comfy, tmp_path):
    """Each concept keeps the rows its own erasure read: the union of a plain and a robust erasure is the edit of
    both row sets, and the report says which concepts were read robustly."""
    model, clip = built("SD1.x")
    plain, _ = erase(model, clip, "Van Gogh", "", alpha_forget=2.0)
    robust, _ = erase(model, clip, "Starry Night", "", alpha_forget=2.0, robust_contexts=2)
    named = [(name, saved(files, patched, tmp_path, name)) for name, patched in (("plain", plain), ("robust", robust))]
    combined, report = files.combine_erasure_files(model, named)
    assert "Robust mode in part: the combined erasures read their forget concepts with 0, 2 context words" in report
    assert files.erasures_on(combined)[0].record.recipe["robust_contexts"] == "0, 2"


# The groups of layers that read the same encoder rows in the tiny models (testbed/tiny_models.py: HiDream's
# caption_projection.0-3 read Llama layers 0, 1, 3, 3 and .4 the T5 rows; Hunyuan-DiT's attn2.kv_proj the BERT
# rows, mlp_t5 and the pool the mT5 rows).
ROW_GROUPS = {"HiDream": {"llama hidden layer 0", "llama hidden layer 1", "llama hidden layer 3", "t5xxl"},
              "Hunyuan-DiT": {"hydit_clip", "mt5xl"}}


@pytest.mark.parametrize("family", sorted(ROW_GROUPS))
def test_layers_reading_different_rows_are_saved_applied_and_combined_per_group(family, built, erase, files, tiny,
                                                                                 comfy, tmp_path):
    model, clip = built(family)
    pooled = family == "HiDream"
    first, _ = erase(model, clip, "Van Gogh", "Claude Monet", erase_pooled=pooled)
    file_a = saved(files, first, tmp_path, "a")
    rows = file_a.erasures[0].record.rows
    assert set(rows) == {f"{kind}@{group}" for kind in ("forget", "retain") for group in ROW_GROUPS[family]} | (
        {"pooled_forget", "pooled_retain"} if pooled else set())
    assert {name.partition("@")[2] for name in file_a.erasures[0].record.spectra} == ROW_GROUPS[family]
    # Applied to a freshly built model: the erase node's weights.
    fresh = tiny.tiny_model(family)
    applied, report = files.apply_erasure_file(fresh, file_a)
    assert sorted(applied.patches) == sorted(first.patches) and fresh.patches == {}
    assert_same_weights(comfy, first, applied, sorted(first.patches))
    # Combined: each group's eraser is rebuilt from the union of that group's rows.
    second, _ = erase(model, clip, "Starry Night\nVan Gogh", "watercolor", erase_pooled=pooled)
    combined, report = files.combine_erasure_files(model, [("a", file_a), ("b", saved(files, second, tmp_path, "b"))])
    at_once, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet\nwatercolor", erase_pooled=pooled)
    keys = sorted(at_once.patches)
    assert sorted(combined.patches) == keys
    assert_same_weights(comfy, at_once, combined, keys)
    recipe = files.erasures_on(combined)[0].record.recipe
    assert recipe["forget"] == "Van Gogh\nStarry Night" and recipe["retain"] == "Claude Monet\nwatercolor"
    assert f"Erased subspaces ({len(ROW_GROUPS[family])}, one per set of encoder rows" in report
    again = saved(files, combined, tmp_path, "ab").erasures[0].record.rows
    assert all(again[f"forget@{group}"].concepts == ("Van Gogh", "Starry Night") for group in ROW_GROUPS[family])


@pytest.mark.parametrize("family", ["SD1.x", "Flux", "Lumina 2"])
def test_a_file_on_a_fresh_model_reproduces_the_erased_weights(family, built, erase, files, tiny, comfy, tmp_path):
    model, clip = built(family)
    patched, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet", strength=0.8)
    erasure_file = saved(files, patched, tmp_path, "erasure")
    fresh = tiny.tiny_model(family)                       # same seed: the same base weights, another object
    applied, report = files.apply_erasure_file(fresh, erasure_file)
    keys = sorted(patched.patches)
    assert sorted(applied.patches) == keys and fresh.patches == {}
    assert_same_weights(comfy, patched, applied, keys)
    assert "base weights verified" in report and "Van Gogh, Starry Night" in report
    half, _ = files.apply_erasure_file(fresh, erasure_file, strength=0.5)
    assert all(p[0][0] == pytest.approx(0.4) for p in half.patches.values())


def test_a_chain_of_cure_and_refusal_is_saved_and_applied_whole(built, erase, files, tiny, comfy, tmp_path):
    refusal = pack_module("comfy_glue.refusal").erase_with_refusal
    model, clip = built("SD1.x")
    first, _ = erase(model, clip, "Van Gogh", "")
    both, _ = refusal(first, clip, PAIRS)
    erasure_file = saved(files, both, tmp_path, "chain")
    assert [e.record.recipe["method"] for e in erasure_file.erasures] == ["CURE spectral eraser",
                                                                          "low-rank refusal vector"]
    applied, _ = files.apply_erasure_file(tiny.tiny_model("SD1.x"), erasure_file)
    assert_same_weights(comfy, both, applied, sorted(both.patches))
    with pytest.raises(ValueError, match="Only CURE erasures can be combined"):
        files.combine_erasure_files(model, [("chain", erasure_file)])


def test_the_denoiser_sources_bias_change_is_saved_and_applied_with_its_weights(built, files, tiny, comfy, tmp_path):
    """The refusal vector's measured recipe patches biases as well as weights: a file carries both, checks the
    biases' shapes like the weights', and reproduces both on a fresh copy of the model."""
    refusal = pack_module("comfy_glue.refusal").erase_with_refusal
    model, clip = built("SD1.x")
    patched, _ = refusal(model, clip, PAIRS, source="denoiser activations", denoiser_steps=2, denoiser_size=8)
    erasure_file = saved(files, patched, tmp_path, "denoiser")
    biases = [key for key in erasure_file.keys if key.endswith(".bias")]
    assert biases and len(biases) == len(erasure_file.keys) // 2
    applied, report = files.apply_erasure_file(tiny.tiny_model("SD1.x"), erasure_file)
    assert sorted(applied.patches) == sorted(patched.patches)
    assert_same_weights(comfy, patched, applied, sorted(patched.patches))
    assert f"; {len(biases)} layers, saved at strength 1" in report
    original = loaded_weights(comfy, model, biases)
    assert all(not torch.allclose(original[k], loaded_weights(comfy, applied, [k])[k]) for k in biases[:2])


def test_the_file_layout_round_trips(built, erase, files, layout):
    model, clip = built("SD1.x")
    patched, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet")
    erasure_file = files.erasure_file_of(patched)
    tensors, metadata = layout.to_state_dict(erasure_file)
    assert all(isinstance(v, str) for v in metadata.values()) and metadata["format"] == "concept-erasure"
    downs = [k for k in tensors if ".down." in k]
    assert len(downs) == 1                                # the layers share one `down`: stored once
    back = layout.from_state_dict(tensors, metadata)
    original, loaded = erasure_file.erasures[0], back.erasures[0]
    assert loaded.record.recipe == original.record.recipe and loaded.strength == original.strength
    assert loaded.record.figures == original.record.figures
    assert loaded.record.rows["forget"].concepts == ("Van Gogh", "Starry Night")
    assert torch.equal(loaded.record.rows["retain"].rows, original.record.rows["retain"].rows.cpu())
    assert set(loaded.record.spectra) == {"forget_energy", "forget_gains", "retain_energy", "retain_gains"}
    for key, (up, down) in original.layers.items():
        assert torch.equal(loaded.layers[key][0], up.cpu()) and torch.equal(loaded.layers[key][1], down.cpu())


def test_concept_rows_union_keeps_each_concept_once(layout):
    ConceptRows = layout.ConceptRows
    a = ConceptRows(("x", "y"), (1, 2), torch.arange(6.).reshape(3, 2))
    b = ConceptRows(("y", "z"), (1, 1), torch.tensor([[9., 9.], [7., 7.]]))
    union = a.union(b)
    assert union.concepts == ("x", "y", "z") and union.counts == (1, 2, 1)
    assert torch.equal(union.rows, torch.cat([a.rows, torch.tensor([[7., 7.]])]))
    with pytest.raises(ValueError, match="damaged"):
        ConceptRows(("x",), (2,), torch.zeros(1, 2))


def test_files_for_another_model_are_refused_and_change_nothing(built, erase, files, tiny, comfy, tmp_path):
    model, clip = built("SD1.x")
    patched, _ = erase(model, clip, "Van Gogh", "")
    erasure_file = saved(files, patched, tmp_path, "erasure")
    other_weights = tiny.tiny_model("SD1.x", seed=1)
    with pytest.raises(ValueError, match="computed for other base weights"):
        files.apply_erasure_file(other_weights, erasure_file, name="erasure.safetensors")
    assert other_weights.patches == {}
    with pytest.raises(ValueError, match="made for a SD1.x model, but this MODEL is SD2.x"):
        files.apply_erasure_file(built("SD2.x")[0], erasure_file)
    with pytest.raises(ValueError, match="computed for other base weights"):
        files.combine_erasure_files(other_weights, [("erasure", erasure_file)])
    with pytest.raises(ValueError, match="strength must be between 0 and 1"):
        files.apply_erasure_file(model, erasure_file, strength=2.0)
    layout = pack_module("cure_core.erasure_file")
    erasure = erasure_file.erasures[0]
    key, (up, down) = next(iter(erasure.layers.items()))
    narrower = layout.Erasure(erasure.record, erasure.strength, {**erasure.layers, key: (up[:-1], down)})
    other_shape = layout.ErasureFile(erasure_file.family, erasure_file.base_weights_sha256, [narrower])
    with pytest.raises(ValueError, match=rf"edits {key} as a {up.shape[0] - 1}x{down.shape[1]} weight"):
        files.apply_erasure_file(model, other_shape)
    renamed = layout.Erasure(erasure.record, erasure.strength, {"diffusion_model.no_such_layer.weight": (up, down)})
    with pytest.raises(ValueError, match="edits diffusion_model.no_such_layer.weight, which this SD1.x model"):
        files.apply_erasure_file(model, layout.ErasureFile("SD1.x", erasure_file.base_weights_sha256, [renamed]))


def test_files_that_are_not_erasures_are_refused(built, erase, layout, tmp_path, comfy):
    model, clip = built("SD1.x")
    patched, _ = erase(model, clip, "Van Gogh", "")
    state_dict, metadata = pack_module("comfy_glue.lora_export").erasure_lora(patched)
    path = tmp_path / "lora.safetensors"
    comfy.utils.save_torch_file(state_dict, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="not an erasure file written by Save Erasure. It is a LoRA"):
        layout.load_erasure_file(path)
    tensors, metadata = layout.to_state_dict(pack_module("comfy_glue.erasure_files").erasure_file_of(patched))
    del tensors[next(k for k in tensors if ".up." in k)]
    with pytest.raises(ValueError, match="damaged erasure file"):
        layout.from_state_dict(tensors, metadata)


def test_only_compatible_erasures_combine(built, erase, files, layout):
    union_of = layout.union_of
    model, clip = built("SD1.x")
    record = lambda patched: files.erasures_on(patched)[0].record
    a = record(erase(model, clip, "Van Gogh", "")[0])
    b = record(erase(model, clip, "Starry Night", "", alpha_forget=5.0)[0])
    with pytest.raises(ValueError, match="differ in alpha_forget"):
        union_of([(a, 1.0), (b, 1.0)])
    robust = record(erase(model, clip, "Starry Night", "", alpha_forget=2.0, robust_contexts=2)[0])
    assert union_of([(a, 1.0), (robust, 1.0)]).recipe["robust_contexts"] == "0, 2"   # each concept's own rows
    assert union_of([(robust, 1.0), (robust, 1.0)]).recipe["robust_contexts"] == "2"
    c = record(erase(model, clip, "Starry Night", "")[0])
    with pytest.raises(ValueError, match="different strengths"):
        union_of([(a, 1.0), (c, 0.5)])
    d = record(erase(model, clip, "Starry Night", "Van Gogh")[0])
    with pytest.raises(ValueError, match="forgotten by one erasure and retained by another"):
        union_of([(a, 1.0), (d, 1.0)])
    odd = layout.ErasureRecord(a.recipe, rows={**a.rows, "unknown@t5xxl": a.rows["forget"]})
    with pytest.raises(ValueError, match="Unknown row set 'unknown@t5xxl'"):
        union_of([(a, 1.0), (odd, 1.0)])
    with pytest.raises(ValueError, match="carries no erasure"):
        files.erasure_file_of(model)


def test_erasures_saved_before_per_concept_spectra_combine_as_they_were_made(built, erase, files, layout, comfy):
    """A file without the recipe's `combination` (saved before it existed) was built from one spectrum: combined
    with another such file it is rebuilt that way, and it does not merge with a per-concept erasure."""
    model, clip = built("SD1.x")
    record = lambda patched: files.erasures_on(patched)[0].record
    old = lambda r: layout.ErasureRecord({k: v for k, v in r.recipe.items() if k != "combination"}, rows=r.rows,
                                         spectra=r.spectra, figures=r.figures)
    a, b = (record(erase(model, clip, c, "", combination="one spectrum (paper)")[0]) for c in ("Van Gogh", "Starry Night"))
    union = layout.union_of([(old(a), 1.0), (old(b), 1.0)])
    family = pack_module("comfy_glue.family").detect_family(model)
    keys = family.text_layer_keys(model.model.state_dict().keys())
    rebuilt, _ = pack_module("comfy_glue.cure").erase_rows(model, family, keys, union.rows, union.recipe)
    at_once, _ = erase(model, clip, "Van Gogh\nStarry Night", "", combination="one spectrum (paper)")
    assert_same_weights(comfy, at_once, rebuilt, sorted(at_once.patches))
    joint = record(erase(model, clip, "Starry Night", "")[0])
    with pytest.raises(ValueError, match="differ in combination"):
        layout.union_of([(old(a), 1.0), (joint, 1.0)])
