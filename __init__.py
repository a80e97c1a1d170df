"""ComfyUI-ReCapture: re-film your own video along a new camera path (ReCapture, CVPR 2025).

ComfyUI loads this file; the nodes live in ``nodes/`` and all logic in the ``recapture`` library.
"""

import importlib.util

WEB_DIRECTORY = "./web"

# Outside ComfyUI (pytest collects this folder as a package) there are no nodes to register.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
