"""Baking: ComfyUI's stock CheckpointSave and ModelSave write the erased weights into the file, and the
stock UNETLoader reads back a model that denoises exactly like the patched one.

The usual tiny SD1.x (32 channels, 64-wide context) is not recognised by ComfyUI's model detection,
which matches SD1.x on model_channels 320 and context_dim 768: these tests use the smallest UNet with
those widths (``SD1.x loadable`` in testbed/tiny_models.py). Its CLIP is 768 wide as well, which a
full CheckpointLoaderSimple would still refuse (it builds the 12-layer CLIP-L), so the checkpoint is
read back with UNETLoader, which loads the diffusion model from checkpoint files too.
"""
import pytest
import torch

from test_comfy_erase import loaded_weights

LOADABLE = "SD1.x loadable"


@pytest.fixture(scope="module")
def loadable(tiny):
    return tiny.tiny_model(LOADABLE), tiny.tiny_clip(LOADABLE)


def test_comfyui_recognises_the_loadable_tiny_model_as_sd15(loadable, comfy):
    from comfy.model_detection import model_config_from_unet
    model, _ = loadable
    config = model_config_from_unet(model.model.diffusion_model.state_dict(), "")
    assert type(config).__name__ == "SD15"


@pytest.mark.parametrize("saver", ["ModelSave", "CheckpointSave"])
def test_a_baked_erasure_reloads_with_the_patched_models_outputs(saver, loadable, tiny, erase, comfy, tmp_path,
                                                                monkeypatch):
    import folder_paths
    from comfy_extras.nodes_model_merging import CheckpointSave, ModelSave
    model, clip = loadable
    patched, _ = erase(model, clip, "Van Gogh\nStarry Night", "Claude Monet")
    node = {"ModelSave": ModelSave, "CheckpointSave": CheckpointSave}[saver]()
    node.output_dir = str(tmp_path)                       # the stock node, writing under this test's folder
    if saver == "ModelSave":
        node.save(patched, "diffusion_models/erased")
    else:
        node.save(patched, clip, tiny.tiny_vae(), "diffusion_models/erased")
    [written] = (tmp_path / "diffusion_models").glob("erased_*.safetensors")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(tmp_path / "diffusion_models")], {".safetensors"}))
    reloaded = comfy.nodes.UNETLoader().load_unet(written.name, "default")[0]
    assert reloaded.patches == {} and type(reloaded.model.model_config).__name__ == "SD15"
    keys = sorted(patched.patches)
    erased, baked = loaded_weights(comfy, patched, keys), loaded_weights(comfy, reloaded, keys)
    original = loaded_weights(comfy, model, keys)
    for key in keys:
        assert torch.allclose(erased[key], baked[key], atol=1e-6), key
        assert not torch.allclose(original[key], baked[key], atol=1e-4), key       # the erasure is in the file
    assert model.patches == {}
    expected, got = denoise(comfy, patched, clip), denoise(comfy, reloaded, clip)
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(denoise(comfy, model, clip), got, atol=1e-3)


def denoise(comfy, model, clip, prompt="a painting of a starry night by Van Gogh"):
    """One denoiser call, loaded the way sampling loads it: ComfyUI's ``apply_model`` on a fixed noisy latent."""
    context = clip.encode_from_tokens(clip.tokenize(prompt))
    noisy = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    comfy.mm.load_models_gpu([model], force_full_load=True)
    with torch.no_grad():
        out = model.model.apply_model(noisy, torch.tensor([5.0]), c_crossattn=context).float().clone()
    comfy.mm.unload_all_models()
    return out
