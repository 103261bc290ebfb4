"""What the miniature models' training scripts share: the run's start and log, one optimiser step, the
weights' running average, and the single fp16 model file they write."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Callable

import safetensors.torch
import torch

from scripts.comfy_env import load_pack


def add_run_arguments(parser) -> None:
    """The options every training script has: where it runs and how many CPU threads it takes."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def start_run(threads: int, device: str) -> Callable[[str], None]:
    """Loads ComfyUI and the pack for a training run; returns its log (seconds since the start, then the line)."""
    if threads:
        torch.set_num_threads(threads)
    load_pack(cpu=device == "cpu")
    started = time.time()

    def log(message: str) -> None:
        print(f"[{time.time() - started:7.1f} s] {message}", flush=True)
    return log


def optimiser_step(loss: torch.Tensor, parameters: list[torch.nn.Parameter], optimiser: torch.optim.Optimizer,
                   schedule, clip_norm: float | None = 1.0) -> None:
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
    optimiser.step()
    schedule.step()


class WeightAverage:
    """An exponential moving average of the weights (decay warming up to 0.999), copied into the model at the
    end: the shipped weights are the average, which samples more cleanly than the last step's."""

    def __init__(self, parameters: list[torch.nn.Parameter]):
        self.parameters = parameters
        self.tensors = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(0.999, (1 + step) / (10 + step))
        for average, p in zip(self.tensors, self.parameters):
            average.lerp_(p.detach(), 1 - decay)

    def state_dict(self) -> list[torch.Tensor]:
        return self.tensors

    @torch.no_grad()
    def load_state_dict(self, tensors: list[torch.Tensor]) -> None:
        for average, saved in zip(self.tensors, tensors):
            average.copy_(saved)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for average, p in zip(self.tensors, self.parameters):
            p.copy_(average)


def write_model_file(out: Path, parts: dict[str, dict[str, torch.Tensor]], recipe: dict,
                     log: Callable[[str], None]) -> None:
    """One ``.safetensors`` with each part's weights under its prefix (``model.``, ``clip.``, ``vae.``), floats in
    fp16, and the recipe in the metadata."""
    state = {f"{prefix}.{key}": value for prefix, part in parts.items() for key, value in part.items()}
    state = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(state, str(out), metadata={"recipe": json.dumps(recipe)})
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): {json.dumps(recipe)}")


class LoopCheckpoint:
    """A training loop's whole state (its objects' ``state_dict``, the step, the random streams: Python's, the
    loop's torch generator and torch's global one) saved at ``path`` every ``every`` steps and restored from it,
    so that a loop started again from its checkpoint ends exactly as one that was never stopped."""

    def __init__(self, path: Path | None, every: int, objects: dict, rng: random.Random,
                 generator: torch.Generator | None = None):
        self.path, self.every, self.objects, self.rng, self.generator = path, every, objects, rng, generator
        self.first = 0

    def resume(self, log: Callable[[str], None]) -> int:
        """The step to start from (0 without a checkpoint); restores everything else."""
        if self.path is None or not self.path.is_file():
            return 0
        state = torch.load(self.path, weights_only=False)
        for name, target in self.objects.items():
            target.load_state_dict(state[name])
        self.rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.generator is not None:
            self.generator.set_state(state["generator"])
        self.first = state["step"]
        log(f"picked up at step {self.first} from {self.path}")
        return self.first

    def step(self, step: int) -> None:
        """Call at the top of each step: saves the state as it is before ``step`` when it is time."""
        if self.path is None or step == self.first or step % self.every:
            return
        state = {name: target.state_dict() for name, target in self.objects.items()}
        state.update(step=step, rng=self.rng.getstate(), torch_rng=torch.get_rng_state(),
                     generator=None if self.generator is None else self.generator.get_state())
        save_atomically(state, self.path)


def save_atomically(value, path: Path) -> None:
    """``torch.save`` through a temporary file, so that an interrupted run never leaves half a checkpoint."""
    partial = path.with_name(path.name + ".partial")
    torch.save(value, partial)
    os.replace(partial, path)
