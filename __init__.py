"""ComfyUI entry point of the concept-erasure node pack (CURE Spectral Eraser).

ComfyUI imports this folder as a package from ``custom_nodes/``; the nodes need its V3
node API (``comfy_api.latest``, ComfyUI 0.3.6x and newer).
"""
try:
    from comfy_api.latest import ComfyExtension  # noqa: F401
except ImportError as error:  # an old ComfyUI: say what to do instead of a bare traceback
    raise ImportError("The concept-erasure nodes need ComfyUI's V3 node API (comfy_api.latest); "
                      "update ComfyUI to 0.3.75 or newer.") from error

from .nodes import ConceptErasureExtension

# ComfyUI serves this folder under /extensions/<pack>/; the frontend's node-help panel shows
# web/docs/<node id>.md for each node.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint() -> ConceptErasureExtension:
    return ConceptErasureExtension()
