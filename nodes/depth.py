"""ReCaptureEstimateDepth: monocular depth from a model the user keeps in models/depth/."""

from __future__ import annotations

import os

import comfy.model_management
import folder_paths

from ._api import CATEGORY_DEPTH, Progress, check_inputs, inside, io, model_path, search_aliases

DEPTH_FOLDER = "depth"
folder_paths.add_model_folder_path(DEPTH_FOLDER, os.path.join(folder_paths.models_dir, DEPTH_FOLDER))

DepthType = io.Custom("RECAPTURE_DEPTH")


def _model_folders() -> list[str]:
    from ..recapture.depth import is_depth_model_folder

    names = set()
    for root in folder_paths.get_folder_paths(DEPTH_FOLDER):
        if os.path.isdir(root):
            names.update(n for n in os.listdir(root)
                         if inside(root, n) and is_depth_model_folder(os.path.join(root, n)))
    return sorted(names)


@search_aliases("depth anything", "monocular depth", "depth map", "depth estimation")
class ReCaptureEstimateDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ReCaptureEstimateDepth",
            display_name="ReCapture Estimate Depth",
            category=CATEGORY_DEPTH,
            description=(
                "Per-frame monocular depth with a transformers depth-estimation model kept in models/depth/ "
                "(Depth Anything V2, ZoeDepth, DPT, Depth Pro...). Loaded from that folder only, never "
                "downloaded. The output says whether the depth is metric."
            ),
            inputs=[
                io.Image.Input("frames", tooltip="Video frames (IMAGE batch)."),
                io.Combo.Input("model", options=_model_folders(),
                               tooltip="A model folder in models/depth/ with config.json and .safetensors weights."),
                io.Int.Input("batch_size", default=4, min=1, max=64,
                             tooltip="Frames per forward pass; lower it if you run out of memory."),
            ],
            outputs=[
                DepthType.Output("depth", display_name="depth", tooltip="Depth maps with their kind (metric or relative inverse) for "
                                                  "ReCapture Depth To Point Cloud."),
                io.Image.Output("depth_preview", display_name="depth_preview", tooltip="Depth for viewing: bright = near, normalised over the clip."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model: str) -> bool | str:
        return check_inputs(cls, locals())

    @classmethod
    def execute(cls, frames, model: str, batch_size: int) -> io.NodeOutput:
        from ..recapture.depth import estimate_depth, load_depth_model, nearness

        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        estimator = load_depth_model(model_path(DEPTH_FOLDER, model), comfy.model_management.get_torch_device())
        progress = Progress(frames.shape[0], unit="frame")
        try:
            depth = estimate_depth(estimator, frames, batch_size, on_batch=progress.advance)
        finally:
            del estimator
            comfy.model_management.soft_empty_cache()
        preview = nearness(depth)[..., None].expand(-1, -1, -1, 3).contiguous()
        return io.NodeOutput(depth, preview)
