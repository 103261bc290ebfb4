"""The command line (``cure-erase`` = scripts/erase.py) on a checkpoint file that ComfyUI's own
loader detects as SD1.x: the erased checkpoint it writes, reloaded by ComfyUI, holds the weights
that the node gives in-process; the LoRA it writes reproduces them through the stock LoRA loading."""
import json
import subprocess
import sys
import tomllib

import pytest
import torch
from safetensors import safe_open

from conftest import REPO, pack_module
from test_comfy_erase import loaded_weights

FORGET, RETAIN = "Van Gogh\nStarry Night", "Claude Monet"


@pytest.fixture(scope="module")
def erase_cli(pack):
    from scripts import erase as cli
    return cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny, comfy):
    path = tmp_path_factory.mktemp("cli") / "tiny_sd15.safetensors"
    comfy.utils.save_torch_file(tiny.tiny_sd15_checkpoint_state_dict(), str(path), metadata={"note": "tiny"})
    return path


@pytest.fixture(scope="module")
def in_process(checkpoint, erase):
    """The node applied in-process to the checkpoint as CheckpointLoaderSimple loads it."""
    from comfy.sd import load_checkpoint_guess_config
    model, clip, _, _ = load_checkpoint_guess_config(str(checkpoint), output_vae=False)
    patched, _ = erase(model, clip, FORGET, RETAIN, strength=0.8)
    return model, patched


def test_tiny_sd15_checkpoint_is_detected_as_sd15(in_process):
    model, patched = in_process
    assert type(model.model.model_config).__name__ == "SD15"
    assert len(patched.patches) == 8 and all(".attn2.to_" in k for k in patched.patches)


def test_cli_writes_the_erased_checkpoint_the_node_gives(checkpoint, in_process, erase_cli, comfy, tmp_path, capsys):
    from comfy.sd import load_checkpoint_guess_config
    out = tmp_path / "erased.safetensors"
    assert erase_cli.main([str(checkpoint), "--forget", "Van Gogh", "--forget", "Starry Night", "--retain", RETAIN,
                           "--strength", "0.8", "--output", str(out)]) == 0
    assert "CURE Spectral Eraser on SD1.x" in capsys.readouterr().out
    _, patched = in_process
    keys = sorted(patched.patches)
    reloaded, _, _, _ = load_checkpoint_guess_config(str(out), output_vae=False)
    assert type(reloaded.model.model_config).__name__ == "SD15"
    expected, got = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    for key in keys:
        scale = float(expected[key].abs().max())
        assert torch.allclose(got[key], expected[key], rtol=0, atol=1e-3 * scale), key   # fp16 file
    with safe_open(str(checkpoint), "pt") as before, safe_open(str(out), "pt") as after:
        assert set(before.keys()) == set(after.keys())
        edited = {"model." + k for k in keys}
        for name in before.keys():
            same = torch.equal(before.get_tensor(name), after.get_tensor(name))
            assert same != (name in edited), name       # only the erased layers changed, and they did
        metadata = after.metadata()
    assert metadata["note"] == "tiny"
    recipe = json.loads(metadata["erasure_recipes"])[0]
    assert recipe["forget"] == FORGET and recipe["retain"] == RETAIN and recipe["strength"] == "0.8"


def test_cli_script_writes_a_lora_the_stock_loader_applies(checkpoint, in_process, comfy, tmp_path):
    """Run as a user runs it: its own process, ComfyUI found without being told."""
    from comfy.sd import load_lora_for_models
    out = tmp_path / "erasure_lora.safetensors"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "erase.py"), str(checkpoint), "--forget",
                             "Van Gogh", "--forget", "Starry Night", "--retain", RETAIN, "--strength", "0.8", "--lora",
                             "--lora-dtype", "fp32", "--output", str(out), "--cpu"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "as a LoRA" in result.stdout
    model, patched = in_process
    reloaded, _ = load_lora_for_models(model, None, comfy.utils.load_torch_file(str(out)), 1.0, 0.0)
    keys = sorted(patched.patches)
    assert sorted(reloaded.patches) == keys
    expected, got = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    for key in keys:
        assert torch.allclose(got[key], expected[key], atol=1e-5), key


@pytest.mark.parametrize("extra, message", [
    ([], "give at least one --forget"),
    (["--forget", "Van Gogh", "--strength", "3"], "strength must be between 0 and 1"),
    (["--forget", "Van Gogh", "--retain", "van gogh"], "both forgotten and retained"),
    (["--erasure-file", "x.safetensors", "--forget", "Van Gogh"], "already says what to erase"),
    (["--preset", "violence and gore", "--retain", "blood"], "both forgotten and retained"),
])
def test_bad_recipe_stops_with_a_message_and_writes_nothing(extra, message, checkpoint, erase_cli, tmp_path):
    out = tmp_path / "never.safetensors"
    with pytest.raises(SystemExit, match=message):
        erase_cli.main([str(checkpoint), "--output", str(out), *extra])
    assert not out.exists()


def test_cli_preset_adds_the_given_concepts_to_the_curated_list(checkpoint, erase_cli, tmp_path):
    from cure_core.presets import PRESETS
    out = tmp_path / "preset.safetensors"
    preset = PRESETS["artistic styles"]
    assert erase_cli.main([str(checkpoint), "--preset", preset.name, "--forget", "Hokusai", "--output", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        recipe = json.loads(f.metadata()["erasure_recipes"])[0]
    assert recipe["forget"].splitlines() == [*preset.forget, "Hokusai"]
    assert recipe["retain"].splitlines() == list(preset.retain)
    assert recipe["concept_kind"] == preset.kind and recipe["templates"].splitlines() == list(preset.templates)


def test_cli_applies_an_erasure_file_without_encoding(checkpoint, in_process, erase_cli, comfy, tmp_path):
    """A file saved from the node's erasure, applied by the command line, gives the node's weights."""
    from comfy.sd import load_checkpoint_guess_config
    from cure_core.erasure_file import save_erasure_file
    from scripts.comfy_env import pack_module
    _, patched = in_process
    erasure = tmp_path / "no_van_gogh.safetensors"
    save_erasure_file(erasure, pack_module("comfy_glue.erasure_files").erasure_file_of(patched))
    out = tmp_path / "from_file.safetensors"
    assert erase_cli.main([str(checkpoint), "--erasure-file", str(erasure), "--output", str(out)]) == 0
    keys = sorted(patched.patches)
    reloaded, _, _, _ = load_checkpoint_guess_config(str(out), output_vae=False)
    expected, got = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    for key in keys:
        assert torch.allclose(got[key], expected[key], rtol=0, atol=1e-3 * float(expected[key].abs().max())), key


def test_bad_paths_are_refused_before_loading(checkpoint, erase_cli, tmp_path):
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    cases = [([str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "o.safetensors")], "no checkpoint"),
             ([str(checkpoint), "--output", str(checkpoint)], "is the input checkpoint"),
             ([str(checkpoint), "--output", str(existing)], "pass --overwrite"),
             ([str(checkpoint), "--output", str(tmp_path / "o.ckpt")], "must end in .safetensors")]
    for argv, message in cases:
        with pytest.raises(SystemExit, match=message):
            erase_cli.main([*argv, "--forget", "Van Gogh"])
    assert existing.read_bytes() == b"keep me"


def test_a_file_that_is_no_checkpoint_is_refused(erase_cli, comfy, tmp_path):
    lora_like = tmp_path / "not_a_model.safetensors"
    comfy.utils.save_torch_file({"some.weight": torch.zeros(2, 2)}, str(lora_like))
    with pytest.raises(SystemExit, match="not an all-in-one checkpoint"):
        erase_cli.main([str(lora_like), "--forget", "Van Gogh", "--output", str(tmp_path / "o.safetensors")])


def test_console_script_and_choices_match_the_pack(erase_cli):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, function = pyproject["project"]["scripts"]["cure-erase"].partition(":")
    assert module == "scripts.erase" and getattr(erase_cli, function) is erase_cli.main
    assert erase_cli.LORA_DTYPES == tuple(pack_module("comfy_glue.lora_export").LORA_DTYPES)


def test_cli_keeps_a_scaled_fp8_checkpoint_scaled_fp8(tiny, erase, erase_cli, comfy, tmp_path):
    """A ``*_fp8_scaled`` checkpoint: the erased layers are computed from the scaled weights and written back
    as fp8 with the same per-layer scales, so the reloaded model computes W (I − P) within fp8's resolution
    (rounding to nearest: at most half a step, 2⁻⁴ of a weight) and every other tensor is the input's."""
    from comfy.sd import load_checkpoint_guess_config
    formats = pack_module("testbed.checkpoint_formats")
    source = tmp_path / "tiny_sd15_fp8_scaled.safetensors"
    comfy.utils.save_torch_file(formats.scaled_fp8(tiny.tiny_sd15_checkpoint_state_dict(), prefix="model.diffusion_model."),
                                str(source))
    out = tmp_path / "erased.safetensors"
    assert erase_cli.main([str(source), "--forget", "Van Gogh", "--output", str(out)]) == 0
    model, clip, _, _ = load_checkpoint_guess_config(str(source), output_vae=False)
    patched, _ = erase(model, clip, "Van Gogh")
    keys = sorted(patched.patches)
    reloaded, _, _, _ = load_checkpoint_guess_config(str(out), output_vae=False)
    assert_baked_within_fp8_rounding(model, patched, reloaded)
    with safe_open(str(source), "pt") as before, safe_open(str(out), "pt") as after:
        edited = {"model." + k for k in keys}
        for name in before.keys():
            assert before.get_tensor(name).dtype == after.get_tensor(name).dtype, name
            assert torch.equal(before.get_tensor(name), after.get_tensor(name)) != (name in edited), name


def assert_baked_within_fp8_rounding(model, patched, reloaded):
    """Every erased weight of ``reloaded`` (a file cure-erase wrote) is the dequantized base weight of ``model`` plus
    the node's patch, within fp8 rounding to nearest: half a step, at most 2⁻⁴ of the largest weight."""
    weights = pack_module("comfy_glue.weights")
    with torch.no_grad():
        for key, patch_list in patched.patches.items():
            [(strength, adapter, *_)] = patch_list
            up, down = adapter.weights[:2]
            expected = weights.base_weight(model, key) + strength * up @ down
            got = weights.base_weight(reloaded, key)
            assert float((got - expected).abs().max()) <= float(expected.abs().max()) * 2 ** -4 + 1e-6, key


@pytest.fixture(scope="module")
def split_files(tiny, comfy, tmp_path_factory):
    """An SD3 diffusion model file in scaled fp8 (as ComfyUI's repackaged files ship) and a CLIP-L text encoder
    file (full size: the CLIP loaders build CLIP-L from its fixed config), the way Load Diffusion Model and
    Load CLIP read them."""
    formats = pack_module("testbed.checkpoint_formats")
    folder = tmp_path_factory.mktemp("split")
    state = {k: v.to(torch.float16) for k, v in tiny.tiny_model("SD3").model.diffusion_model.state_dict().items()}
    comfy.utils.save_torch_file(formats.scaled_fp8(state), str(folder / "sd3_fp8_scaled.safetensors"))
    prefix = "cond_stage_model.transformer."
    clip_l = {k.removeprefix(prefix): v for k, v in tiny.tiny_sd15_checkpoint_state_dict().items() if k.startswith(prefix)}
    comfy.utils.save_torch_file(clip_l, str(folder / "clip_l.safetensors"))
    return folder / "sd3_fp8_scaled.safetensors", folder / "clip_l.safetensors"


def test_cli_erases_split_files_and_writes_the_diffusion_model_in_its_format(split_files, erase_cli, erase, comfy,
                                                                             tmp_path, capsys):
    from comfy.sd import CLIPType, load_clip, load_diffusion_model
    diffusion, clip_l = split_files
    out = tmp_path / "sd3_erased.safetensors"
    assert erase_cli.main([str(diffusion), "--text-encoder", str(clip_l), "--clip-type", "sd3", "--forget", "Van Gogh",
                           "--output", str(out)]) == 0
    assert "CURE Spectral Eraser on SD3" in capsys.readouterr().out
    model = load_diffusion_model(str(diffusion))
    patched, _ = erase(model, load_clip([str(clip_l)], clip_type=CLIPType.SD3), "Van Gogh")
    [key] = sorted(patched.patches)                                      # context_embedder.weight
    reloaded = load_diffusion_model(str(out))
    assert type(reloaded.model.model_config).__name__ == "SD3"
    assert pack_module("comfy_glue.weights").weight_format(reloaded, key) == "scaled float8_e4m3fn"
    assert_baked_within_fp8_rounding(model, patched, reloaded)
    with safe_open(str(diffusion), "pt") as before, safe_open(str(out), "pt") as after:
        assert set(before.keys()) == set(after.keys())
        changed = {name for name in before.keys() if not torch.equal(before.get_tensor(name), after.get_tensor(name))}
    assert changed == {key.removeprefix("diffusion_model.")}


@pytest.mark.parametrize("extra, message", [
    (["--clip-type", "sd3"], "needs both --text-encoder"),
    (["--text-encoder", "CLIP", "--clip-type", "no such type"], "unknown --clip-type"),
])
def test_split_files_need_their_encoders_and_a_known_type(extra, message, split_files, erase_cli, tmp_path):
    diffusion, clip_l = split_files
    extra = [str(clip_l) if arg == "CLIP" else arg for arg in extra]
    out = tmp_path / "never.safetensors"
    with pytest.raises(SystemExit, match=message):
        erase_cli.main([str(diffusion), "--forget", "Van Gogh", "--output", str(out), *extra])
    assert not out.exists()
