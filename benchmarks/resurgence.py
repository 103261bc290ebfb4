"""Resurgence: does an erased concept come back after an unrelated LoRA fine-tune? Run by ``miniworld.py``.

Published work ("Unstable Unlearning") reports that concepts erased from a model return after fine-tuning on data
that never shows them. The benchmark measures it the way a ComfyUI user would meet it: ComfyUI's own **Train LoRA**
node (``comfy_extras/nodes_train.py``, its LoRA in fp32, :class:`FinetuneBudget`) trains on the *erased* model, on
pictures the world renders of scenes that contain none of the erased concepts, each captioned with its full
prompt; the erased prompts are then drawn again with the LoRA applied and the detector counts how often the
concept shows (``resurgence_rate``, beside the ``erased_rate`` before the fine-tune). The budget is part of the
benchmark's ``Config`` and so of ``run.json``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from benchmarks.attacks import rendered_latents
from testbed.miniworld.scenes import ATTRIBUTES, TEMPLATES, prompt_for, random_scene


@dataclass(frozen=True)
class FinetuneBudget:
    """The unrelated fine-tune: Train LoRA's LoRA (rank 8, AdamW, MSE), in fp32, longer and faster than its
    defaults (16 steps at 5e-4 barely move the miniature model), on a fixed picture set."""
    pictures: int = 32              # rendered scenes without any erased concept, each with its caption
    steps: int = 600
    batch: int = 4
    learning_rate: float = 1e-3
    rank: int = 8                   # Train LoRA's default


def unrelated_scenes(forget: list[str], count: int, seed: int):
    """``count`` random scenes none of whose values is an erased concept, with a prompt naming every value."""
    rng = random.Random(seed)
    scenes = []
    while len(scenes) < count:
        scene = random_scene(rng)
        named = {a: scene.value(a) for a in ATTRIBUTES}
        if not set(named.values()) & set(forget):
            scenes.append((scene, prompt_for(named, rng.choice(TEMPLATES))))
    return scenes


def finetuned(model, clip, vae, forget: list[str], budget: FinetuneBudget, seed: int):
    """A clone of ``model`` with a LoRA trained by ComfyUI's Train LoRA node on unrelated scenes (its trainable
    weight wrappers, which ComfyUI takes off the shared modules when it next loads another clone)."""
    from comfy_extras.nodes_train import TrainLoraNode
    scenes = unrelated_scenes(forget, budget.pictures, seed)
    latents = rendered_latents(vae, [scene for scene, _ in scenes])
    with torch.no_grad():
        positive = [clip.encode_from_tokens_scheduled(clip.tokenize(text))[0] for _, text in scenes]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)                 # the trainer draws batches and noise levels from the global RNG
        return TrainLoraNode.execute(
            # one latent per entry: Train LoRA 0.3.75 only sets up its batching when given a list of latents
            model=[model], latents=[{"samples": latent[None]} for latent in latents], positive=[positive],
            batch_size=[budget.batch], steps=[budget.steps], grad_accumulation_steps=[1],
            learning_rate=[budget.learning_rate], rank=[budget.rank], optimizer=["AdamW"], loss_function=["MSE"],
            seed=[seed], training_dtype=["fp32"], lora_dtype=["fp32"], algorithm=["LoRA"],
            gradient_checkpointing=[False], existing_lora=["[None]"]).result[0]
