"""The miniature video world (clips, exact detector, prompts) and the plumbing of its Wan 2.1 model:
ComfyUI's own classes, the training script's text rows and latent normalisation, the loader."""
import importlib
import random
import re

import numpy as np
import pytest
import torch

from testbed.videoworld.clips import (ATTRIBUTES, FRAME_SIZE, FRAMES, NEIGHBOURS, TEMPLATES, VOCABULARY, ClipScene,
                                      all_concepts, chance_level, prompt_for, random_clip_scene,
                                      random_named_prompt, render_clip)
from testbed.videoworld.detector import detect_clip, read_clip, shows


@pytest.fixture(scope="module")
def trainer(pack):
    return importlib.import_module("scripts.train_miniature_video")


@pytest.fixture(scope="module")
def video(pack):
    from scripts.comfy_env import pack_module
    return pack_module("testbed.miniature_video")


def test_detector_reads_rendered_clips_exactly():
    rng = random.Random(5)
    scenes = [random_clip_scene(rng) for _ in range(600)]
    found, frames = zip(*(read_clip(render_clip(s)) for s in scenes))
    for attribute in ATTRIBUTES:
        accuracy = np.mean([f[attribute] == s.value(attribute) for f, s in zip(found, scenes)])
        assert accuracy >= 0.99, (attribute, accuracy)
    for attribute in ("shape", "colour", "style", "background"):       # each frame on its own, too
        accuracy = np.mean([f[attribute] == s.value(attribute) for fs, s in zip(frames, scenes) for f in fs])
        assert accuracy >= 0.99, (attribute, accuracy)
    assert {s.value(a) for s in scenes for a in ATTRIBUTES} == set(all_concepts())


def test_clips_keep_the_shape_inside_the_frame_and_move_as_named():
    rng = random.Random(1)
    for motion in VOCABULARY["motion"]:
        for size in VOCABULARY["size"]:
            scene = random_clip_scene(rng, motion=motion, size=size)
            clip = render_clip(scene)
            assert clip.shape == (FRAMES, FRAME_SIZE, FRAME_SIZE, 3)
            assert shows(detect_clip(clip), motion) and shows(detect_clip(clip), size)
            for index in (0, FRAMES - 1):                               # never cut by the frame's edge
                frame = scene.frame(index)
                x, y = frame.centre
                assert min(x, y) - frame.radius >= 1 and max(x, y) + frame.radius <= FRAME_SIZE / 2 - 1


def test_detector_tells_video_neighbours_apart():
    base = {"shape": "square", "colour": "blue", "style": "solid", "background": "white"}
    for concept in ("moving left", "moving up", "growing", "still"):
        attribute = "motion" if concept in VOCABULARY["motion"] else "size"
        other = {"motion": "still", "size": "steady", attribute: concept}
        scene = ClipScene(**base, **other, start=(16.0, 16.0), radius=6.0 if other["size"] == "steady" else 5.0)
        found = detect_clip(render_clip(scene))
        assert shows(found, concept) and not shows(found, NEIGHBOURS[concept])


def test_detector_sees_no_motion_without_a_shape():
    blank = np.full((FRAMES, FRAME_SIZE, FRAME_SIZE, 3), 125 / 255, dtype=np.float32)
    found = detect_clip(blank)
    assert found["background"] == "gray" and found["shape"] is None and found["motion"] is None


def test_prompts_name_exactly_what_they_say():
    rng = random.Random(3)
    for _ in range(300):
        scene = random_clip_scene(rng)
        prompt, named = random_named_prompt(rng, scene)
        for attribute in ATTRIBUTES:
            said = any(re.search(rf"\b{word}\b", prompt) for word in VOCABULARY[attribute][scene.value(attribute)])
            assert said == (attribute in named), (prompt, attribute)
    for template in TEMPLATES:      # every template says every attribute when all are named
        prompt = prompt_for({a: random_clip_scene(rng).value(a) for a in ATTRIBUTES}, template)
        assert "[" not in prompt and "{" not in prompt
    assert chance_level("moving left") == 0.2 and chance_level("growing") == pytest.approx(1 / 3)


def test_the_vocabulary_keeps_every_world_word_whole(video):
    import sentencepiece
    tokenizer = sentencepiece.SentencePieceProcessor(model_proto=video.world_spiece_model())
    words = {word for values in VOCABULARY.values() for synonyms in values.values() for s in synonyms
             for word in s.split()}
    assert all(len(tokenizer.encode(word)) == 1 for word in words)
    assert tokenizer.encode("red, circle", out_type=str) == ["\u2581red", ",", "\u2581circle"]
    assert tokenizer.encode("a zebra") and tokenizer.unk_id() == 2 and tokenizer.eos_id() == 1


def test_training_rows_are_what_clip_text_encode_gives(video, trainer, comfy):
    clip = video.build_clip(video.world_spiece_model())
    from scripts.comfy_env import pack_module
    pack_module("testbed.tiny_models").randomize(video.text_model(clip), 0)
    prompts = ["a red circle moving left on a sand background", "", "still, growing"]
    with torch.no_grad():
        ours = trainer.encode_rows(video.text_model(clip), trainer.PromptRows(clip).batch(prompts))
    for row, prompt in zip(ours, prompts):
        theirs = comfy.nodes.CLIPTextEncode().encode(clip, prompt)[0][0][0]
        assert theirs.shape == (1, 512, 64)
        torch.testing.assert_close(row, theirs[0], atol=1e-5, rtol=1e-5)


def test_latent_normalisation_is_exact_and_reaches_wans_statistics(video, trainer):
    from scripts.comfy_env import pack_module
    torch.manual_seed(0)
    autoencoder = video.build_autoencoder()
    pack_module("testbed.tiny_models").randomize(autoencoder, 3)
    scenes = [random_clip_scene(random.Random(i)) for i in range(6)]
    with torch.no_grad():
        clips = trainer.clip_batch(scenes, FRAMES)
        before = autoencoder.decode(autoencoder.encode(clips))
        latents = trainer.encode_all(autoencoder, scenes, FRAMES, "cpu")
        mapped = trainer.normalise_latents(autoencoder, latents)
        torch.testing.assert_close(autoencoder.encode(clips), mapped, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(autoencoder.decode(mapped), before, atol=1e-4, rtol=1e-4)
    fmt = video.latent_format()
    torch.testing.assert_close(mapped.mean(dim=(0, 2, 3, 4)), fmt.latents_mean.flatten(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mapped.std(dim=(0, 2, 3, 4)), fmt.latents_std.flatten(), atol=1e-4, rtol=1e-4)


TINY_RUN = ["--clips", "16", "--autoencoder-steps", "4", "--autoencoder-batch", "2", "--text-steps", "2",
            "--text-batch", "8", "--steps", "4", "--batch", "4"]


@pytest.fixture(scope="module")
def tiny_run(trainer, tmp_path_factory):
    """The training script's whole pipeline at a few steps of each phase: a model file of the right kind."""
    out = tmp_path_factory.mktemp("video") / "video.safetensors"
    trainer.main(["--out", str(out), *TINY_RUN])
    return out


def test_a_short_training_run_writes_a_model_comfyui_samples_and_decodes(video, comfy, tiny_run):
    """The file loads through ComfyUI's own classes (Wan 2.1 DiT, umT5 tokenizer from the file's vocabulary, the
    VAE loader reads Wan 2.1's autoencoder) and a stock KSampler and VAE Decode turn an empty video latent into a
    9-frame clip."""
    model, clip, vae, metadata = video.load_miniature_video(tiny_run)
    assert metadata["recipe"]["steps"] == 4 and type(model.model).__name__ == "WAN21"
    from comfy_extras.nodes_hunyuan import EmptyHunyuanLatentVideo
    latent = EmptyHunyuanLatentVideo().execute(FRAME_SIZE, FRAME_SIZE, FRAMES, 1)[0]
    positive = comfy.nodes.CLIPTextEncode().encode(clip, "a red circle moving left")[0]
    negative = comfy.nodes.CLIPTextEncode().encode(clip, "")[0]
    samples = comfy.nodes.KSampler().sample(model, 0, 2, 4.0, "euler", "simple", positive, negative, latent)[0]
    assert samples["samples"].shape == (1, *video.LATENT_SHAPE)
    frames = comfy.nodes.VAEDecode().decode(vae, samples)[0]
    assert frames.shape == (FRAMES, FRAME_SIZE, FRAME_SIZE, 3)


def test_an_interrupted_training_run_ends_as_an_uninterrupted_one(trainer, tiny_run, tmp_path):
    """With ``--checkpoints``, the same command again picks up each finished phase, or the autoencoder's or the
    DiT's last saved step (here step 2 of 4), and writes the same weights as a run that was never stopped."""
    import safetensors.torch
    checkpoints = tmp_path / "ckpt"
    resumable = [*TINY_RUN, "--checkpoints", str(checkpoints), "--checkpoint-every", "2"]
    expected = safetensors.torch.load_file(str(tiny_run))

    def run_again(name: str) -> None:
        out = tmp_path / name
        trainer.main(["--out", str(out), *resumable])
        got = safetensors.torch.load_file(str(out))
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name

    run_again("first.safetensors")
    assert {p.name for p in checkpoints.iterdir()} == {"autoencoder_training.pt", "autoencoder.pt",
                                                       "text_encoder.pt", "dit.pt"}
    assert torch.load(checkpoints / "dit.pt", weights_only=False)["step"] == 2
    assert torch.load(checkpoints / "autoencoder_training.pt", weights_only=False)["step"] == 2
    run_again("from_the_dit_step.safetensors")                  # phases done, the DiT from its step 2
    for later in ("autoencoder.pt", "text_encoder.pt", "dit.pt"):
        (checkpoints / later).unlink()
    run_again("from_the_autoencoder_step.safetensors")          # stopped in the autoencoder's step 2


def test_the_benchmark_runs_the_erasure_nodes_on_the_video_world(tiny_run):
    """The benchmark's video world end to end on the short run's model (its figures mean nothing; the plumbing
    does): the CURE node and the refusal vector erase a motion concept from a Wan 2.1 DiT, ComfyUI samples clips,
    the video detector reads them, and each erased concept gets its own rate and chance level."""
    from benchmarks import miniworld
    config = miniworld.Config(world="video", tasks=["erase 1, motion"], methods=["original", "CURE (defaults)",
                              "refusal vector"], seeds=1, prompts_per_concept=1, preserved_prompts=1,
                              attack_concepts=0)
    rows = miniworld.run(config, model_file=tiny_run)
    assert [(r["task"], r["method"]) for r in rows] == [("erase 1, motion", m) for m in config.methods]
    for row in rows:
        assert row["concepts"] == ["moving left", "growing"]
        assert row["per_concept"]["moving left"]["chance"] == 0.2
        assert row["per_concept"]["growing"]["chance"] == pytest.approx(1 / 3)
        assert all(0 <= row[k] <= 1 for k in ("erased_rate", "preserved_acc", "neighbour_acc", "synonym_leak"))
    assert rows[0]["seconds"] < rows[1]["seconds"]             # the original is no edit
