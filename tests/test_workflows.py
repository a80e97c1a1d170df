"""The shipped workflow files, run as they are through the real ComfyUI's HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from comfy_harness import REPO, ui_to_api
from recapture.demo_clip import write_demo_clip
from recapture.lora import load_lora_file

pytestmark = pytest.mark.comfy

WORKFLOWS = REPO / "workflows"


@pytest.fixture(scope="module")
def sample_in_input(comfy):
    return write_demo_clip(comfy.base / "input", num_frames=14)


def saved_videos(comfy, entry: dict) -> dict[str, Path]:
    """SaveVideo outputs by filename prefix folder/name."""
    out = {}
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            if item["filename"].endswith(".mp4"):
                out[item["filename"].split("_")[0]] = comfy.base / "output" / item["subfolder"] / item["filename"]
    return out


def decode(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)]), float(s.average_rate)


def test_anchor_only_workflow_runs_as_shipped(comfy, sample_in_input):
    workflow = json.loads((WORKFLOWS / "ReCapture - anchor video and mask.json").read_text())
    prompt = ui_to_api(workflow, comfy.object_info())
    entry = comfy.run(prompt, timeout=600)
    videos = saved_videos(comfy, entry)
    assert set(videos) == {"anchor", "mask"}, videos
    anchor, fps = decode(videos["anchor"])
    mask, mask_fps = decode(videos["mask"])
    assert anchor.shape == (14, 576, 1024, 3) and mask.shape == (14, 576, 1024, 3)
    assert fps == pytest.approx(8.0) and mask_fps == pytest.approx(8.0)
    valid = mask[..., 0] > 127
    # frame 0 is the source view (all valid); the orbit then opens holes that grow over the clip
    assert valid[0].mean() > 0.99
    assert 0.5 < valid[-1].mean() < 0.99
    assert valid[-1].mean() < valid[len(valid) // 2].mean() <= valid[0].mean()
    # holes are black in the anchor
    assert anchor[-1][~valid[-1]].mean() < 10
    # the first frame's point cloud file for Preview 3D
    preview = [o for o in entry["outputs"].values() if "result" in o]
    assert preview and (comfy.base / "output" / preview[0]["result"][0]).is_file()


def test_full_workflow_runs_with_a_tiny_single_file_svd(comfy, sample_in_input, comfy_code):
    """The full workflow as shipped, with a tiny single-file SVD under the name it names. Only what makes
    a CPU run take seconds instead of hours is changed: frame size and count, and step counts."""
    from conftest import save_tiny_single_file_svd

    save_tiny_single_file_svd(comfy_code, comfy.base / "models" / "checkpoints" / "svd_xt.safetensors")
    workflow = json.loads((WORKFLOWS / "ReCapture - full method with SVD.json").read_text())
    prompt = ui_to_api(workflow, comfy.object_info())
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "ReCaptureLoadVideo":
            inputs.update(width=64, height=64, frame_count=4)
        if node["class_type"] in ("ReCaptureTrainMaskedLoRA", "ReCaptureSVDDualLoRASample", "ReCaptureSDEditRefine"):
            inputs["steps"] = 2
    entry = comfy.run(prompt, timeout=600)
    videos = saved_videos(comfy, entry)
    assert set(videos) == {"anchor", "mask", "recaptured"}, videos
    videos_frames = {}
    for name in videos:
        frames, fps = decode(videos[name])
        assert frames.shape == (4, 64, 64, 3) and fps == pytest.approx(8.0), name
        videos_frames[name] = frames.astype(float)
    # the LoRA pair, trained from the single file, says which model it was made for
    loras = comfy.base / "models" / "loras" / "recapture"
    temporal = max(loras.glob("recapture*_temporal.safetensors"), key=lambda p: p.stat().st_mtime)
    assert temporal.with_name(temporal.name.replace("_temporal", "_spatial")).is_file()
    state, metadata = load_lora_file(temporal)
    assert metadata["recapture.adapter"] == "temporal" and all(k.startswith("diffusion_model.") for k in state)
    assert json.loads(metadata["recapture.settings"])["model"] == "svd_xt.safetensors"
    # the sampled and the refined frames play in their own nodes: the refined ones are the saved video's
    players = {node["class_type"]: entry["outputs"][key]["recapture_player"][0] for key, node in prompt.items()
               if "recapture_player" in entry["outputs"].get(key, {})}
    assert set(players) == {"ReCaptureRenderAnchor", "ReCaptureSVDDualLoRASample", "ReCaptureSDEditRefine"}
    assert all(len(p["frames"]) == 4 for p in players.values()) and "overlay" not in players["ReCaptureSDEditRefine"]
    refined = np.stack([np.asarray(Image.open(comfy.base / "temp" / f["subfolder"] / f["filename"]).convert("RGB"))
                        for f in players["ReCaptureSDEditRefine"]["frames"]]).astype(float)
    assert np.abs(refined - videos_frames["recaptured"]).mean() < 6  # PNG previews vs the encoded video


def test_long_clip_workflow_takes_every_frame_in_windows(comfy, comfy_code):
    """The long-clip workflow as shipped, on the 60-frame sample (written small: the loaders size it) with a
    tiny single-file SVD: every frame goes through aligned depth, the anchor, training and windowed
    sampling and refining. Changed for a CPU: frame size, steps, and overlap 1 (20 windows of the tiny
    model's 4 frames instead of 57)."""
    from conftest import save_tiny_single_file_svd

    write_demo_clip(comfy.base / "input", num_frames=60, width=256, height=144)
    save_tiny_single_file_svd(comfy_code, comfy.base / "models" / "checkpoints" / "svd_xt.safetensors")
    workflow = json.loads((WORKFLOWS / "ReCapture - long clip with steady depth.json").read_text())
    prompt = ui_to_api(workflow, comfy.object_info())
    nodes = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert nodes["ReCaptureLoadVideo"]["frame_count"] == 0 and nodes["ReCaptureDepthToPointCloud"]["align_depth"]
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "ReCaptureLoadVideo":
            inputs.update(width=64, height=64)
        if node["class_type"] in ("ReCaptureTrainMaskedLoRA", "ReCaptureSVDDualLoRASample", "ReCaptureSDEditRefine"):
            inputs.update(steps=2, window_overlap=1)
    entry = comfy.run(prompt, timeout=900)
    videos = saved_videos(comfy, entry)
    assert set(videos) == {"anchor", "mask", "recaptured"}, videos
    for name in videos:
        frames, fps = decode(videos[name])
        assert frames.shape == (60, 64, 64, 3) and fps == pytest.approx(8.0), name
    mask, _ = decode(videos["mask"])
    valid = mask[..., 0] > 127
    # the orbit opens holes over the whole clip (at 64x64 the depth edges dropped by edge_threshold cost
    # frame 0 a third of its points: 0.69 valid, then 0.59 at frame 30 and 0.55 at the last, measured)
    assert valid[0].mean() > valid[30].mean() > valid[-1].mean() and valid[0].mean() > 0.6
