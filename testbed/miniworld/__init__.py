"""The miniature world: procedural scenes named by prompts (:mod:`.scenes`) and an exact detector (:mod:`.detector`)."""
