"""Where the pack's nodes sit in ComfyUI's node library."""
CATEGORY = "concept erasure"
DEMO_CATEGORY = f"{CATEGORY}/demo"
