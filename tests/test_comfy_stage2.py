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
    write_demo_clip(comfy.base / "input", num_frames=14)
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

    from comfy_harness import ComfyError

    save_file({"conditioner.embedders.1.model.x": torch.zeros(1), "model.diffusion_model.input_blocks.0.0.weight":
               torch.zeros(1)}, str(comfy.base / "models" / "checkpoints" / "sdxl_base.safetensors"))
    options = comfy.object_info("ReCaptureLoadSVD")["ReCaptureLoadSVD"]["input"]["required"]["model"][1]["options"]
    # only what looks like SVD is offered (issue 17, item 4); a non-SVD file named anyway is refused before running
    assert "checkpoints/sdxl_base.safetensors" not in options and "diffusers/tiny-svd" in options
    load = {"class_type": "ReCaptureLoadSVD", "inputs": {"model": "checkpoints/sdxl_base.safetensors", "dtype": "auto"}}
    with pytest.raises(ComfyError, match="it looks like an SDXL checkpoint"):
        comfy.queue({"1": load, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})


def previewed(comfy, entry: dict, node: str):
    """The frames a PreviewImage node showed, as a uint8 array (N, H, W, 3)."""
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(comfy.base / item["type"] / item["subfolder"] / item["filename"]))
                     for item in entry["outputs"][node]["images"]])


def sampler(anchor=("5", 0), lora=("7", 0), **inputs) -> dict:
    """A Dual-LoRA Sample node with its defaults (SVD's conditioning: the LoRA's)."""
    return {"class_type": "ReCaptureSVDDualLoRASample", "inputs": {
        "svd": ["6", 0], "lora": list(lora), "anchor": list(anchor), "image_prompt": "first anchor frame", "steps": 2,
        "seed": 0, "min_guidance": 1.0, "max_guidance": 3.0, "fps": 0, "motion_bucket_id": -1,
        "noise_aug_strength": -1.0, "temporal_strength": 1.0, "spatial_strength": 1.0, "decode_chunk_size": 8} | inputs}


def refiner(lora=("7", 0), **inputs) -> dict:
    return {"class_type": "ReCaptureSDEditRefine", "inputs": {
        "svd": ["6", 0], "lora": list(lora), "frames": ["1", 0], "strength": 0.6, "steps": 3, "seed": 0} | inputs}


TRAINED = {"fps": 12, "motion_bucket_id": 40, "noise_aug_strength": 0.1}
SVD_DEFAULTS = {"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02}


def test_sampling_and_refining_take_the_loras_conditioning_unless_told(comfy, tiny_svd):
    """A LoRA trained with fps 12, motion bucket 40, noise augmentation 0.1 is sampled and refined with
    them by default (straight from training, and loaded from its files); inputs set on the node win."""
    import numpy as np

    prompt = training_prompt(tiny_svd, steps=1, name="conditioned")
    prompt["7"]["inputs"] |= TRAINED
    nodes = {"10": sampler(), "11": sampler(**TRAINED), "12": sampler(**SVD_DEFAULTS),
             "13": refiner(), "14": refiner(**TRAINED), "15": refiner(**SVD_DEFAULTS)}
    for node, spec in list(nodes.items()):
        nodes[f"p{node}"] = {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}
    entry = comfy.run(prompt | nodes)
    out = {node: previewed(comfy, entry, f"p{node}") for node in ("10", "11", "12", "13", "14", "15")}
    assert np.array_equal(out["10"], out["11"]) and not np.array_equal(out["10"], out["12"])
    assert np.array_equal(out["13"], out["14"]) and not np.array_equal(out["13"], out["15"])

    # the same pair loaded from its files: the metadata carries the settings
    loaded = {"class_type": "ReCaptureLoadLoRA", "inputs": {"temporal": "recapture/conditioned_temporal.safetensors",
                                                           "spatial": "recapture/conditioned_spatial.safetensors"}}
    again = prompt | {"20": loaded, "21": sampler(lora=("20", 0)), "p21": {"class_type": "PreviewImage",
                                                                           "inputs": {"images": ["21", 0]}}}
    del again["7"], again["8"]
    entry = comfy.run(again)
    assert np.array_equal(previewed(comfy, entry, "p21"), out["10"])


def test_the_samplers_image_prompt_is_black_in_the_masks_holes(comfy, tiny_svd):
    """An anchor from elsewhere may hold anything in its holes: with its mask the prompt is black there,
    as in training (here: source frames with an all-hole mask prompt like an all-black anchor)."""
    import numpy as np

    prompt = training_prompt(tiny_svd, steps=1, name="masked")
    holes = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    black = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 0}}
    nodes = {"30": holes, "31": black, "10": sampler(anchor=("1", 0), mask=["30", 0]), "11": sampler(anchor=("31", 0)),
             "12": sampler(anchor=("1", 0))}
    for node in ("10", "11", "12"):
        nodes[f"p{node}"] = {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}
    entry = comfy.run(prompt | nodes)
    out = {node: previewed(comfy, entry, f"p{node}") for node in ("10", "11", "12")}
    assert np.array_equal(out["10"], out["11"]) and not np.array_equal(out["10"], out["12"])
