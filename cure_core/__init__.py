"""Closed-form concept erasure for text-conditioned diffusion models, with no ComfyUI import.

Use on its own (rows of every matrix are embeddings)::

    from cure_core.spectral import low_rank_eraser
    from cure_core.edit import edit_layers

    eraser = low_rank_eraser(forget_rows, retain_rows, alpha_forget=2.0, alpha_retain=2.0)
    for e in edit_layers({"to_k": W_k, "to_v": W_v}, eraser, forget_rows, retain_rows):
        W_new = weights[e.key] + e.up @ e.down          # W (I - P_dis)

Modules: :mod:`.spectral` (the math), :mod:`.edit` (per-layer low-rank updates and their
measures), :mod:`.concepts` (concept lists, templates, token selection),
:mod:`.families` (which layers read text in each model family), :mod:`.refusal` (the low-rank
refusal vector), :mod:`.erasure_file` (saved erasures and the union of several), :mod:`.presets`
(curated concept lists).
"""
__version__ = "0.1.0"
