"""The demo models and the test bed: what lets the pack run and be measured without downloading weights.

- :mod:`.tiny_models`: ComfyUI's own model classes of every supported family at tiny sizes, seeded random
  weights, real tokenizers (the Tiny Demo Model node, and most tests)
- :mod:`.miniature`: the loader of the trained miniature model (``models/miniature_world.safetensors``)
- :mod:`.miniworld`: the procedural world it was trained on and the exact detector that reads its pictures
  (no ComfyUI import: the benchmark, the training script and the tests use it directly)

None of this is needed to erase concepts from a real model; the nodes that use it are in the
*concept erasure/demo* category.
"""
