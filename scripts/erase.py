"""Erase concepts from a checkpoint on disk, without the UI: ``cure-erase`` (or ``python scripts/erase.py``).

It loads the checkpoint with ComfyUI's own loader (ComfyUI is used as a library: ``--comfyui DIR``,
default ``$COMFYUI_DIR``, ``.comfyui/ComfyUI`` or the ComfyUI this pack is installed in), applies
exactly what the **Erase Concepts (CURE)** node applies, and writes either the erased checkpoint
(every tensor and the metadata of the input, the edited layers replaced) or, with ``--lora``, the
LoRA that the **Save Erasure as LoRA** node writes::

    cure-erase sd15.safetensors --forget "Van Gogh" --retain "Claude Monet" --output sd15_no_van_gogh.safetensors
    cure-erase sd15.safetensors --forget "Mickey Mouse" --kind object --lora --output no_mickey_lora.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:      # appended: ComfyUI's own top-level `nodes` must win over the pack's
    sys.path.append(str(REPO))
from cure_core.concepts import CONCEPT_KINDS, TOKEN_SELECTIONS  # noqa: E402  (no ComfyUI import)
from cure_core.families import LAYER_CHOICES  # noqa: E402
from scripts.comfy_env import load_pack, pack_module  # noqa: E402

LORA_DTYPES = ("fp16", "bf16", "fp32")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cure-erase", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="all-in-one checkpoint (.safetensors/.ckpt) of a supported family")
    p.add_argument("--output", "-o", type=Path, required=True, help="file to write (.safetensors)")
    p.add_argument("--lora", action="store_true", help="write the erasure as a LoRA file instead of a whole checkpoint")
    p.add_argument("--lora-dtype", choices=LORA_DTYPES, default="fp16", help="precision of the LoRA factors")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    what = p.add_argument_group("what to erase")
    # --preset NAME and --erasure-file FILE belong here: each yields the same keyword arguments
    # as recipe_from_args (see below) and excludes --forget.
    what.add_argument("--forget", action="append", default=[], metavar="CONCEPT",
                      help="a concept to remove (repeat the option for several)")
    what.add_argument("--retain", action="append", default=[], metavar="CONCEPT",
                      help="a concept to protect (repeatable)")
    what.add_argument("--kind", choices=CONCEPT_KINDS, default="style", help="concept kind: templates and default α")
    what.add_argument("--template", action="append", default=[], dest="templates", metavar="TEXT",
                      help="prompt template with {} for the concept (repeatable; default: the kind's)")
    what.add_argument("--alpha-forget", type=float, default=0.0, help="expansion of the forget span (0 = kind's)")
    what.add_argument("--alpha-retain", type=float, default=0.0, help="expansion of the retain span (0 = kind's)")
    what.add_argument("--strength", type=float, default=1.0, help="0 … 1: W' = W − strength · W P_dis")
    what.add_argument("--layers", choices=LAYER_CHOICES, default=LAYER_CHOICES[0], help="which text-reading layers")
    what.add_argument("--token-selection", choices=TOKEN_SELECTIONS, default=TOKEN_SELECTIONS[0],
                      help="which token embeddings span a concept")
    what.add_argument("--erase-pooled", action="store_true", help="also erase from the pooled text vector")
    comfy = p.add_argument_group("ComfyUI")
    comfy.add_argument("--comfyui", type=Path, default=None,
                       help="ComfyUI folder (with main.py); default $COMFYUI_DIR, .comfyui/ComfyUI, or the ComfyUI "
                            "whose custom_nodes/ holds this pack")
    comfy.add_argument("--cpu", action="store_true", help="compute on the CPU even when a GPU is there")
    return p


def recipe_from_args(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``erase_concepts`` (the node's function) from the command line."""
    if not args.forget:
        raise SystemExit("cure-erase: nothing to erase: give at least one --forget CONCEPT.")
    return {"forget_text": "\n".join(args.forget), "retain_text": "\n".join(args.retain), "kind": args.kind,
            "templates_text": "\n".join(args.templates), "alpha_forget": args.alpha_forget,
            "alpha_retain": args.alpha_retain, "strength": args.strength, "layers": args.layers,
            "token_selection": args.token_selection, "erase_pooled": args.erase_pooled}


def check_paths(args: argparse.Namespace) -> None:
    """Refuse before loading anything: a missing input, or an output that would replace a file."""
    if not args.checkpoint.is_file():
        raise SystemExit(f"cure-erase: no checkpoint at {args.checkpoint}.")
    if args.output.suffix != ".safetensors":
        raise SystemExit(f"cure-erase: --output must end in .safetensors (got {args.output.name}).")
    if args.output.resolve() == args.checkpoint.resolve():
        raise SystemExit("cure-erase: --output is the input checkpoint; write the erased model to a new file.")
    if args.output.exists() and not args.overwrite:
        raise SystemExit(f"cure-erase: {args.output} exists; pass --overwrite to replace it.")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    recipe = recipe_from_args(args)
    check_paths(args)
    load_pack(cpu=args.cpu, comfyui=args.comfyui)
    import comfy.sd
    import comfy.utils
    erase_concepts = pack_module("nodes.erase_cure").erase_concepts

    state_dict, metadata = comfy.utils.load_torch_file(str(args.checkpoint), return_metadata=True)
    loaded = comfy.sd.load_state_dict_guess_config(dict(state_dict), output_vae=False, metadata=dict(metadata or {}))
    if loaded is None or loaded[1] is None:
        raise SystemExit(f"cure-erase: {args.checkpoint.name} is not an all-in-one checkpoint with a text encoder "
                         "that ComfyUI recognises.")
    model, clip = loaded[0], loaded[1]
    try:
        patched, report = erase_concepts(model, clip, **recipe)
    except ValueError as error:           # the node's own messages: what was wrong and what to do
        raise SystemExit(f"cure-erase: {error}") from None
    print(report)
    export = pack_module("nodes.export")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.lora:
        lora, lora_metadata = export.erasure_lora(patched, export.LORA_DTYPES[args.lora_dtype])
        comfy.utils.save_torch_file(lora, str(args.output), metadata=lora_metadata)
        print(f"Wrote the erasure of {lora_metadata['erasure_layers']} layers as a LoRA to {args.output}")
    else:
        baked = export.erased_state_dict(patched, state_dict)
        out_metadata = {**(metadata or {}), "erasure_recipes": json.dumps(export.erasure_recipes(patched))}
        comfy.utils.save_torch_file(baked, str(args.output), metadata=out_metadata)
        print(f"Wrote the erased checkpoint to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
