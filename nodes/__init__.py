"""ComfyUI nodes of ReCapture: schemas plus short ``execute`` methods that call the library."""

from __future__ import annotations

import importlib.util
import logging

from ._api import ComfyExtension, io

# Imported by the library only when a node runs, so a missing one disables that node, not the pack.
_RUNTIME_MODULES = {"av": "av", "kornia": "kornia", "transformers": "transformers",
                    "diffusers": "diffusers", "peft": "peft", "safetensors": "safetensors",
                    "einops": "einops", "PIL": "pillow"}


def missing_dependencies() -> list[str]:
    return sorted(pkg for mod, pkg in _RUNTIME_MODULES.items() if importlib.util.find_spec(mod) is None)


class ReCaptureExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .anchor import ReCaptureCameraTrajectory, ReCaptureDepthToPointCloud, ReCaptureRenderAnchor
        from .depth import ReCaptureEstimateDepth
        from .svd import (ReCaptureLoadLoRA, ReCaptureLoadSVD, ReCaptureSDEditRefine, ReCaptureSVDDualLoRASample,
                          ReCaptureTrainMaskedLoRA)
        from .video import ReCaptureLoadVideo

        return [
            ReCaptureLoadVideo,
            ReCaptureEstimateDepth,
            ReCaptureDepthToPointCloud,
            ReCaptureCameraTrajectory,
            ReCaptureRenderAnchor,
            ReCaptureLoadSVD,
            ReCaptureTrainMaskedLoRA,
            ReCaptureLoadLoRA,
            ReCaptureSVDDualLoRASample,
            ReCaptureSDEditRefine,
        ]


async def comfy_entrypoint() -> ReCaptureExtension:
    from .routes import register_routes

    register_routes()  # the camera editor's path preview (web/camera_editor.js)
    missing = missing_dependencies()
    if missing:
        logging.warning(
            "[ComfyUI-ReCapture] missing Python packages: %s. Nodes that need them will fail until you "
            "run: pip install -r custom_nodes/ComfyUI-ReCapture/requirements.txt", ", ".join(missing)
        )
    return ReCaptureExtension()
