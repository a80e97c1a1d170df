"""The pack inside a real ComfyUI server: registration and schemas."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.comfy

NODES = {
    "ReCaptureLoadVideo": {"video", "frames_folder", "start_frame", "frame_count", "every_nth", "width", "height", "resize",
                           "video_input"},
    "ReCaptureEstimateDepth": {"frames", "model", "batch_size"},
    "ReCaptureDepthToPointCloud": {"frames", "depth", "depth_kind", "near", "far", "fov_deg", "edge_threshold",
                                   "preview_points", "align_depth"},
    "ReCaptureCameraTrajectory": {"preset", "amount", "easing", "frames", "pivot_distance", "camera_file",
                                  "point_cloud", "custom_path"},
    "ReCaptureRenderAnchor": {"point_cloud", "camera_path", "dilate_holes"},
    "ReCaptureLoadSVD": {"model", "dtype"},
    "ReCaptureTrainMaskedLoRA": {"svd", "anchor", "mask", "source", "steps", "frames", "learning_rate", "rank", "seed",
                                 "conditioning_frame", "fps", "motion_bucket_id", "noise_aug_strength", "mask_erosion",
                                 "lora_name", "low_memory", "spatial_augment", "window_overlap"},
    "ReCaptureLoadLoRA": {"temporal", "spatial"},
    "ReCaptureSVDDualLoRASample": {"svd", "lora", "anchor", "image_prompt", "steps", "seed", "min_guidance",
                                   "max_guidance", "fps", "motion_bucket_id", "noise_aug_strength",
                                   "temporal_strength", "spatial_strength", "decode_chunk_size", "low_memory", "source",
                                   "mask", "window_overlap"},
    "ReCaptureSDEditRefine": {"svd", "lora", "frames", "strength", "steps", "seed", "decode_chunk_size", "low_memory",
                              "min_guidance", "max_guidance", "fps", "motion_bucket_id", "noise_aug_strength",
                              "window_overlap"},
}
OUTPUTS = {
    "ReCaptureLoadVideo": ["IMAGE", "FLOAT", "INT"],
    "ReCaptureEstimateDepth": ["RECAPTURE_DEPTH", "IMAGE"],
    "ReCaptureDepthToPointCloud": ["RECAPTURE_POINTCLOUD", "STRING"],
    "ReCaptureCameraTrajectory": ["RECAPTURE_CAMERA_PATH", "STRING"],
    "ReCaptureRenderAnchor": ["IMAGE", "MASK", "MASK"],
    "ReCaptureLoadSVD": ["RECAPTURE_SVD"],
    "ReCaptureTrainMaskedLoRA": ["RECAPTURE_LORA", "IMAGE"],
    "ReCaptureLoadLoRA": ["RECAPTURE_LORA"],
    "ReCaptureSVDDualLoRASample": ["IMAGE"],
    "ReCaptureSDEditRefine": ["IMAGE"],
}


def test_every_node_is_listed_with_its_inputs(comfy):
    info = comfy.object_info()
    ours = {name for name in info if name.startswith("ReCapture")}
    assert ours == set(NODES), f"unexpected node set: {sorted(ours)}"
    for name, expected in NODES.items():
        spec = info[name]
        inputs = set(spec["input"].get("required", {})) | set(spec["input"].get("optional", {}))
        assert inputs == expected, name
        assert spec["output"] == OUTPUTS[name], name
        assert all(label == label.lower() for label in spec["output_name"]), spec["output_name"]  # named, not typed
        assert spec["category"].startswith("ReCapture/"), name
        assert spec["description"], name


def test_every_input_has_a_tooltip(comfy):
    info = comfy.object_info()
    for name in NODES:
        spec = info[name]["input"]
        for section in ("required", "optional"):
            for input_name, (kind, *rest) in spec.get(section, {}).items():
                options = rest[0] if rest else {}
                if input_name in ("point_cloud", "camera_path") and name == "ReCaptureRenderAnchor":
                    continue  # the link says it all
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_video_input_has_the_core_upload_button(comfy):
    spec = comfy.object_info("ReCaptureLoadVideo")["ReCaptureLoadVideo"]
    video = spec["input"]["required"]["video"]
    assert video[1].get("video_upload") is True


def test_every_node_has_a_served_help_page_with_a_picture(comfy):
    import re

    import requests

    base = f"{comfy.url}/extensions/ComfyUI-ReCapture/docs/"
    for name in NODES:
        r = requests.get(f"{base}{name}.md", timeout=10)
        assert r.status_code == 200 and r.text.startswith("# "), name
        pictures = re.findall(r"!\[[^\]]+\]\(([^)]+\.png)\)", r.text)
        assert pictures, f"{name}'s help page has no picture"
        for picture in pictures:
            image = requests.get(base + picture, timeout=10)
            assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n", (name, picture)


def test_shipped_workflows_are_listed_as_templates(comfy):
    templates = comfy.get("/workflow_templates")
    assert "ReCapture - anchor video and mask" in templates.get("ComfyUI-ReCapture", [])


@pytest.mark.parametrize("field, value", [("video", "../../../etc/passwd"), ("video", "/etc/hostname"),
                                          ("frames_folder", "../")])
def test_names_that_leave_the_input_folder_are_refused(comfy, field, value):
    from comfy_harness import ComfyError

    inputs = {"video": "x.mp4", "frames_folder": "(none: use the video)", "start_frame": 0, "frame_count": 2,
              "every_nth": 1, "width": 64, "height": 64, "resize": "crop", field: value}
    prompt = {"1": {"class_type": "ReCaptureLoadVideo", "inputs": inputs},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(ComfyError, match="outside ComfyUI's input folder|not in ComfyUI's input folder"):
        comfy.queue(prompt)
