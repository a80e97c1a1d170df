"""Stage 2a in the real server: load a tiny SVD folder, train on a rendered anchor, files and Cancel.

(The whole method through the server, from a single-file checkpoint as users keep theirs: the shipped
workflow in tests/test_workflows.py.)"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from comfy_harness import Events
from conftest import save_tiny_svd_folder
from recapture.lora import load_lora_file
from recapture.demo_clip import write_demo_clip

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def tiny_svd(comfy):
    write_demo_clip(comfy.base / "input")
    save_tiny_svd_folder(comfy.base / "models" / "diffusers" / "tiny-svd")
    return "diffusers/tiny-svd"


def training_prompt(model: str, steps: int, name: str) -> dict:
    video = {"video": "recapture_sample.mp4", "frames_folder": "(none: use the video)", "start_frame": 0,
             "frame_count": 4, "every_nth": 1, "width": 64, "height": 64, "resize": "crop"}
    return {
        "1": {"class_type": "ReCaptureLoadVideo", "inputs": video},
        "2": {"class_type": "ReCaptureLoadVideo", "inputs": video | {"frames_folder": "recapture_sample_depth/"}},
        "3": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["2", 0], "depth_kind": "inverse", "near": 2.4, "far": 6.0, "fov_deg": 60.0,
            "edge_threshold": 0.04, "preview_points": 1000}},
        "4": {"class_type": "ReCaptureCameraTrajectory", "inputs": {
            "preset": "orbit_left", "amount": 10.0, "easing": "linear", "frames": 4, "pivot_distance": 0.0,
            "camera_file": "(none: use the preset)", "point_cloud": ["3", 0]}},
        "5": {"class_type": "ReCaptureRenderAnchor", "inputs": {"point_cloud": ["3", 0], "camera_path": ["4", 0],
                                                               "dilate_holes": 0}},
        "6": {"class_type": "ReCaptureLoadSVD", "inputs": {"model": model, "dtype": "auto"}},
        "7": {"class_type": "ReCaptureTrainMaskedLoRA", "inputs": {
            "svd": ["6", 0], "anchor": ["5", 0], "mask": ["5", 1], "source": ["1", 0], "steps": steps, "frames": 0,
            "learning_rate": 5e-4, "rank": 4, "seed": 0, "conditioning_frame": 0, "fps": 7, "motion_bucket_id": 127,
            "noise_aug_strength": 0.02, "mask_erosion": 0, "lora_name": name}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 1]}},
    }


def test_training_writes_both_loras_in_comfyui_format(comfy, tiny_svd):
    folder = comfy.base / "models" / "loras" / "recapture"
    before = {p.name for p in folder.iterdir()} if folder.exists() else set()
    events = Events(comfy)
    try:
        prompt_id = events.queue(training_prompt(tiny_svd, steps=3, name="sample"))
        entry = comfy.wait(prompt_id)
        time.sleep(0.5)  # the last websocket messages
    finally:
        events.close()
    files = sorted({p.name for p in folder.iterdir()} - before)
    assert files == ["sample_spatial.safetensors", "sample_temporal.safetensors"]
    # the node's status line: step, both losses and the time left, live
    texts = [text for node, text in events.texts if node == "7"]
    assert texts[-1].startswith("step 3/3 · temporal loss ") and "ETA" not in texts[-1], texts
    assert any(t.startswith("step 1/3 · temporal loss ") and " · spatial " in t and " · ETA " in t for t in texts), texts
    state, metadata = load_lora_file(folder / "sample_temporal.safetensors")
    assert metadata["recapture.adapter"] == "temporal" and metadata["recapture.rank"] == "4"
    assert all(k.startswith("diffusion_model.") for k in state)
    assert len(entry["outputs"]["8"]["images"]) == 1  # the loss curve
    # the same name again is not overwritten
    comfy.run(training_prompt(tiny_svd, steps=1, name="sample") | {})
    assert "sample_2_temporal.safetensors" in {p.name for p in folder.iterdir()}


def test_cancel_during_training_leaves_no_file_and_the_server_carries_on(comfy, tiny_svd):
    folder = comfy.base / "models" / "loras" / "recapture"
    prompt_id = comfy.queue(training_prompt(tiny_svd, steps=100_000, name="cancelled"))

    def interrupt_when_training():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            queue = requests.get(comfy.url + "/queue", timeout=5).json()
            if queue["queue_running"] and (comfy.base / "models" / "diffusers").exists():
                time.sleep(3)  # let it reach the training loop
                requests.post(comfy.url + "/interrupt", timeout=5)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=interrupt_when_training)
    thread.start()
    entry = comfy.wait(prompt_id, timeout=300)
    thread.join()
    assert entry["status"]["status_str"] == "error"
    leftovers = [p.name for p in (folder.iterdir() if folder.exists() else []) if "cancelled" in p.name or ".partial" in p.name]
    assert leftovers == []
    comfy.run(training_prompt(tiny_svd, steps=1, name="after_cancel"))
    assert (folder / "after_cancel_temporal.safetensors").is_file()


def test_bad_lora_name_is_refused(comfy, tiny_svd):
    from comfy_harness import ComfyError

    with pytest.raises(ComfyError, match="may only use letters"):
        comfy.run(training_prompt(tiny_svd, steps=1, name="../../escape"))


def test_load_svd_lists_checkpoints_and_names_what_a_wrong_file_is(comfy, tiny_svd):
    import torch
    from safetensors.torch import save_file

    from comfy_harness import execution_error

    save_file({"conditioner.embedders.1.model.x": torch.zeros(1), "model.diffusion_model.input_blocks.0.0.weight":
               torch.zeros(1)}, str(comfy.base / "models" / "checkpoints" / "sdxl_base.safetensors"))
    options = comfy.object_info("ReCaptureLoadSVD")["ReCaptureLoadSVD"]["input"]["required"]["model"][1]["options"]
    assert "checkpoints/sdxl_base.safetensors" in options and "diffusers/tiny-svd" in options
    load = {"class_type": "ReCaptureLoadSVD", "inputs": {"model": "checkpoints/sdxl_base.safetensors", "dtype": "auto"}}
    entry = comfy.wait(comfy.queue({"1": load, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}))
    assert entry["status"]["status_str"] == "error"
    assert "it looks like an SDXL checkpoint" in execution_error(entry)
