"""The ComfyUI glue the nodes share: everything that touches ComfyUI objects (CLIP, MODEL, the sampler,
model folders) but is not a node. Each erase node's work is a plain function here (``cure.erase_concepts``,
``refusal.erase_with_refusal``, ``uce.erase_concepts_uce``), so that the nodes, the command line, the
benchmarks and the tests call the same code; the math itself is in :mod:`cure_core`.

- :mod:`.encoding`: concept prompts to token rows with the graph's CLIP
- :mod:`.patching`: effective weights in, low-rank patches on a clone out; the erasures a MODEL carries
- :mod:`.denoiser_activations`: layer inputs captured while the denoiser samples (the refusal vector's source)
- :mod:`.family`: which supported family a MODEL is
- :mod:`.cure`, :mod:`.refusal`, :mod:`.uce`: the three erase methods on a MODEL
- :mod:`.erasure_files`, :mod:`.lora_export`: saved erasures, LoRA files and baked checkpoints
"""
