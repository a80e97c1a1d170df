"""Input validation in a real ComfyUI 0.3.75 server (issue 16, items 4, 5 and 12): what /prompt refuses
before anything of the prompt runs.

- ComfyUI skips its min/max check for the inputs a node's ``validate_inputs`` declares (all of them when it
  takes ``**kwargs``): Load Video's ranges must hold again (item 4).
- ComfyUI's min/max check lets NaN through (every comparison with NaN is False), and JSON posted to /prompt
  may carry NaN: every FLOAT input of every node must be refused when it is not finite (item 5).
- ComfyUI 0.3.75 does not check V3 combo values against their lists: every combo is checked by the pack,
  and its lists offer only entries that will be accepted (item 12).

Prompts are posted as JSON with NaN (Python's json writes it, as a script or a broken frontend may);
``requests``' own ``json=`` refuses NaN, so the body is made here. Model files are stand-ins with the right
layout: these prompts are meant to be refused before anything loads them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import requests

from recapture.demo_clip import DEPTH_FOLDER, VIDEO_NAME, write_demo_clip

pytestmark = pytest.mark.comfy

NAN = float("nan")
CLIP = "hardening_clip.mp4"
FRAMES = "hardening_frames/"
METADATA = "hardening_sample.json"  # the bundled sample's metadata JSON (near, far, fov): not a camera file
CAMERA = "hardening_path.json"
DPT = "hardening-fake-dpt"
SVD = "diffusers/hardening-fake-svd"
LORAS = ("hardening_fake_temporal.safetensors", "hardening_fake_spatial.safetensors")
NO_FOLDER, NO_FILE = "(none: use the video)", "(none: use the preset)"

# every FLOAT input of the pack (test_every_float_and_combo_input_is_covered keeps this list whole)
FLOATS = [("ReCaptureDepthToPointCloud", name) for name in ("near", "far", "fov_deg", "edge_threshold")] + [
    ("ReCaptureCameraTrajectory", "amount"), ("ReCaptureCameraTrajectory", "pivot_distance"),
    ("ReCaptureTrainMaskedLoRA", "learning_rate"), ("ReCaptureTrainMaskedLoRA", "noise_aug_strength")] + [
    ("ReCaptureSVDDualLoRASample", name) for name in ("min_guidance", "max_guidance", "noise_aug_strength",
                                                       "temporal_strength", "spatial_strength")] + [
    ("ReCaptureSDEditRefine", name) for name in ("strength", "min_guidance", "max_guidance", "noise_aug_strength")]
COMBOS = [("ReCaptureLoadVideo", "video"), ("ReCaptureLoadVideo", "frames_folder"), ("ReCaptureLoadVideo", "resize"),
          ("ReCaptureEstimateDepth", "model"), ("ReCaptureDepthToPointCloud", "depth_kind"),
          ("ReCaptureCameraTrajectory", "preset"), ("ReCaptureCameraTrajectory", "easing"),
          ("ReCaptureCameraTrajectory", "camera_file"), ("ReCaptureLoadSVD", "model"), ("ReCaptureLoadSVD", "dtype"),
          ("ReCaptureLoadLoRA", "temporal"), ("ReCaptureLoadLoRA", "spatial"),
          ("ReCaptureSVDDualLoRASample", "image_prompt")]


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    """A small clip, its depth frames and metadata JSON, a camera file, and stand-in models, all under names
    of their own (removed afterwards); plus links that lead outside the input and models folders."""
    base, made = comfy.base, []
    sample = tmp_path_factory.mktemp("hardening-sample")
    outside = tmp_path_factory.mktemp("hardening-outside")
    write_demo_clip(sample, num_frames=4, width=128, height=64)
    inputs = base / "input"
    for source, name in ((sample / VIDEO_NAME, CLIP), (sample / DEPTH_FOLDER, FRAMES.rstrip("/")),
                         (sample / "recapture_sample.json", METADATA)):
        (shutil.copytree if source.is_dir() else shutil.copy)(source, inputs / name)
        made.append(inputs / name)
    (inputs / CAMERA).write_text(json.dumps({"version": 1, "convention": "opencv", "frames": [
        {"pose": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}]}))
    made.append(inputs / CAMERA)
    dpt, svd = base / "models" / "depth" / DPT, base / "models" / "diffusers" / SVD.split("/")[1]
    for folder, marker in ((dpt, "config.json"), (svd, "model_index.json")):
        folder.mkdir(parents=True)
        (folder / marker).write_text("{}")
        made.append(folder)
    (dpt / "model.safetensors").write_bytes(b"")
    (svd / "unet").mkdir()
    for name in LORAS:
        (base / "models" / "loras" / name).write_bytes(b"")
        made.append(base / "models" / "loras" / name)
    # links inside ComfyUI's folders that lead outside them
    shutil.copy(sample / VIDEO_NAME, outside / "secret.mp4")
    shutil.copytree(sample / DEPTH_FOLDER, outside / "frames")
    shutil.copy(inputs / CAMERA, outside / "path.json")
    shutil.copytree(dpt, outside / "dpt")
    shutil.copytree(svd, outside / "svd")
    links = {inputs / "hardening_link.mp4": outside / "secret.mp4", inputs / "hardening_link_frames": outside / "frames",
             inputs / "hardening_link_path.json": outside / "path.json",
             base / "models" / "depth" / "hardening-link-dpt": outside / "dpt",
             base / "models" / "diffusers" / "hardening-link-svd": outside / "svd"}
    for link, target in links.items():
        link.symlink_to(target)
        made.append(link)
    try:
        yield base
    finally:
        for path in reversed(made):
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)


def graph() -> dict:
    """Every node of the pack, each feeding an output node; core nodes make the cheap images and masks."""
    def node(class_type: str, **inputs) -> dict:
        return {"class_type": class_type, "inputs": inputs}

    return {
        "image": node("EmptyImage", width=64, height=64, batch_size=2, color=0),
        "mask": node("SolidMask", value=1.0, width=64, height=64),
        "video": node("ReCaptureLoadVideo", video=CLIP, frames_folder=NO_FOLDER, start_frame=0, frame_count=2,
                      every_nth=1, width=64, height=64, resize="crop"),
        "depth": node("ReCaptureEstimateDepth", frames=["image", 0], model=DPT, batch_size=4),
        "cloud": node("ReCaptureDepthToPointCloud", frames=["video", 0], depth=["video", 0], depth_kind="inverse",
                      near=1.0, far=10.0, fov_deg=60.0, edge_threshold=0.04, preview_points=1000),
        "path": node("ReCaptureCameraTrajectory", preset="orbit_left", amount=10.0, easing="linear", frames=2,
                     pivot_distance=0.0, camera_file=NO_FILE, point_cloud=["cloud", 0]),
        "anchor": node("ReCaptureRenderAnchor", point_cloud=["cloud", 0], camera_path=["path", 0], dilate_holes=0),
        "svd": node("ReCaptureLoadSVD", model=SVD, dtype="auto"),
        "train": node("ReCaptureTrainMaskedLoRA", svd=["svd", 0], anchor=["image", 0], mask=["mask", 0],
                      source=["image", 0], steps=1, frames=0, learning_rate=5e-4, rank=4, seed=0,
                      conditioning_frame=0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, mask_erosion=0,
                      lora_name="hardening"),
        "lora": node("ReCaptureLoadLoRA", temporal=LORAS[0], spatial=LORAS[1]),
        "sample": node("ReCaptureSVDDualLoRASample", svd=["svd", 0], lora=["lora", 0], anchor=["image", 0],
                       image_prompt="first anchor frame", steps=1, seed=0, min_guidance=1.0, max_guidance=3.0, fps=7,
                       motion_bucket_id=127, noise_aug_strength=0.02, temporal_strength=1.0, spatial_strength=1.0,
                       decode_chunk_size=8),
        "refine": node("ReCaptureSDEditRefine", svd=["svd", 0], lora=["lora", 0], frames=["image", 0], strength=0.3,
                       steps=1, seed=0),
        "out_video": node("PreviewImage", images=["video", 0]),
        "out_depth": node("PreviewImage", images=["depth", 1]),
        "out_anchor": node("PreviewImage", images=["anchor", 0]),
        "out_train": node("PreviewImage", images=["train", 1]),
        "out_sample": node("PreviewImage", images=["sample", 0]),
        "out_refine": node("PreviewImage", images=["refine", 0]),
    }


NODE_IDS = {"ReCaptureLoadVideo": "video", "ReCaptureEstimateDepth": "depth", "ReCaptureDepthToPointCloud": "cloud",
            "ReCaptureCameraTrajectory": "path", "ReCaptureRenderAnchor": "anchor", "ReCaptureLoadSVD": "svd",
            "ReCaptureTrainMaskedLoRA": "train", "ReCaptureLoadLoRA": "lora", "ReCaptureSVDDualLoRASample": "sample",
            "ReCaptureSDEditRefine": "refine"}
OUTPUT_OF = {"video": "out_video", "depth": "out_depth", "cloud": "out_anchor", "path": "out_anchor",
             "anchor": "out_anchor", "svd": "out_refine", "train": "out_train", "lora": "out_refine",
             "sample": "out_sample", "refine": "out_refine"}


def prompt_for(node_type: str, **changes) -> tuple[dict, str]:
    """The part of ``graph()`` one output needs to run ``node_type``, with ``changes`` to its inputs."""
    full, node_id = graph(), NODE_IDS[node_type]
    full[node_id]["inputs"].update(changes)
    keep, todo = set(), [OUTPUT_OF[node_id]]
    while todo:
        current = todo.pop()
        if current not in keep:
            keep.add(current)
            todo += [value[0] for value in full[current]["inputs"].values() if isinstance(value, list)]
    return {k: v for k, v in full.items() if k in keep}, node_id


def post(comfy, prompt: dict) -> requests.Response:
    """POST /prompt with NaN allowed in the JSON; a prompt the server takes (the bug) is waited for, so
    that it does not run on into the next test."""
    body = json.dumps({"prompt": prompt, "client_id": "hardening"})  # allow_nan: NaN goes out as NaN
    r = requests.post(comfy.url + "/prompt", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    if r.status_code == 200:
        comfy.wait(r.json()["prompt_id"], timeout=300)
    return r


def refusal(comfy, prompt: dict, node_id: str) -> str:
    """Asserts the prompt was refused by validation for ``node_id`` alone (so the rest of the prompt is
    valid: the value under test is the only problem); returns its errors as text."""
    r = post(comfy, prompt)
    assert r.status_code == 400, f"the server took the prompt and ran it: {r.text[:500]}"
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation", body
    assert set(body["node_errors"]) == {node_id}, body["node_errors"]
    errors = body["node_errors"][node_id]["errors"]
    # the pack's validate_inputs raises (one entry per problem: nodes/_api.InvalidInput); ComfyUI's own checks
    assert errors and all(e["type"] in ("exception_during_inner_validation", "value_bigger_than_max",
                                        "value_smaller_than_min") for e in errors), errors
    return "\n".join(f"{e['message']}: {e['details']}" for e in errors)


@pytest.mark.parametrize("field, value, expected", [
    ("height", 8192, "ReCapture Load Video: height must be between 64 and 4096, got 8192"),
    ("width", 0, "ReCapture Load Video: width must be between 64 and 4096, got 0"),
    ("width", -64, "ReCapture Load Video: width must be between 64 and 4096, got -64"),
    ("width", 100, "width and height must be multiples of 64"),
    ("frame_count", 10**9, "Value 1000000000 bigger than max of 10000"),  # ComfyUI's own check, kept
    ("start_frame", -1, "Value -1 smaller than min of 0"),
    ("every_nth", 0, "Value 0 smaller than min of 1"),
])
def test_load_video_ranges_are_checked_before_running(comfy, files, field, value, expected):
    prompt, node_id = prompt_for("ReCaptureLoadVideo", **{field: value})
    message = refusal(comfy, prompt, node_id)
    assert expected in message and field in message


@pytest.mark.parametrize("node_type, field", FLOATS)
def test_nan_in_any_float_input_is_refused_before_running(comfy, files, node_type, field):
    prompt, node_id = prompt_for(node_type, **{field: NAN})
    display = comfy.object_info(node_type)[node_type]["display_name"]
    assert f"{display}: {field} must be a finite number between" in refusal(comfy, prompt, node_id)


def test_infinite_floats_are_refused_with_the_same_message(comfy, files):
    prompt, node_id = prompt_for("ReCaptureDepthToPointCloud", edge_threshold=-math.inf)
    assert "edge_threshold must be a finite number between 0 and 1, got -inf" in refusal(comfy, prompt, node_id)


@pytest.mark.parametrize("node_type, field", COMBOS)
def test_a_value_outside_any_combo_list_is_refused_before_running(comfy, files, node_type, field):
    prompt, node_id = prompt_for(node_type, **{field: "not-a-choice"})
    message = refusal(comfy, prompt, node_id)
    assert f"{field} 'not-a-choice' is not" in message and "pick one from the list" in message


@pytest.mark.parametrize("node_type, field, value, expected", [
    ("ReCaptureLoadVideo", "frames_folder", "/", "frames_folder '/' is not one this input takes"),
    ("ReCaptureLoadVideo", "frames_folder", "./", "frames_folder './' is not one this input takes"),
    ("ReCaptureLoadVideo", "frames_folder", "hardening_link_frames/",
     "frames_folder 'hardening_link_frames/' is outside ComfyUI's input folder"),
    ("ReCaptureLoadVideo", "video", "hardening_link.mp4", "video 'hardening_link.mp4' is outside ComfyUI's input folder"),
    ("ReCaptureLoadVideo", "video", "../../etc/hostname", "is outside ComfyUI's input folder"),
    ("ReCaptureCameraTrajectory", "camera_file", METADATA, f"camera_file '{METADATA}' is not one this input takes"),
    ("ReCaptureCameraTrajectory", "camera_file", "hardening_link_path.json", "is outside ComfyUI's input folder"),
    ("ReCaptureCameraTrajectory", "camera_file", "../x.json", "is outside ComfyUI's input folder"),
    ("ReCaptureEstimateDepth", "model", "hardening-link-dpt", "model 'hardening-link-dpt' is not one of its choices"),
    ("ReCaptureEstimateDepth", "model", "../depth/" + DPT, "is not one of its choices"),
    ("ReCaptureLoadSVD", "model", "diffusers/hardening-link-svd", "is not one of its choices"),
    ("ReCaptureLoadLoRA", "temporal", "../loras/" + LORAS[0], "is not one of its choices"),
])
def test_files_and_models_that_would_be_refused_later_are_refused_before_running(comfy, files, node_type, field,
                                                                                  value, expected):
    prompt, node_id = prompt_for(node_type, **{field: value})
    assert expected in refusal(comfy, prompt, node_id)


def test_lists_offer_only_what_will_be_accepted(comfy, files):
    info = comfy.object_info()

    def options(node_type: str, field: str) -> list:
        spec = info[node_type]["input"]
        return (spec.get("required", {}) | spec.get("optional", {}))[field][1]["options"]

    assert CLIP in options("ReCaptureLoadVideo", "video")
    assert "hardening_link.mp4" not in options("ReCaptureLoadVideo", "video")
    assert FRAMES in options("ReCaptureLoadVideo", "frames_folder")
    assert "hardening_link_frames/" not in options("ReCaptureLoadVideo", "frames_folder")
    assert CAMERA in options("ReCaptureCameraTrajectory", "camera_file")
    assert METADATA not in options("ReCaptureCameraTrajectory", "camera_file")
    assert "hardening_link_path.json" not in options("ReCaptureCameraTrajectory", "camera_file")
    assert DPT in options("ReCaptureEstimateDepth", "model")
    assert "hardening-link-dpt" not in options("ReCaptureEstimateDepth", "model")
    assert SVD in options("ReCaptureLoadSVD", "model")
    assert "diffusers/hardening-link-svd" not in options("ReCaptureLoadSVD", "model")


def test_a_bad_camera_file_is_refused_before_the_upstream_nodes_run(comfy, files):
    """Load Video and Depth To Point Cloud come first; with the camera file refused only when Camera
    Trajectory ran, they decoded the clip and wrote a point cloud for nothing."""
    clouds = comfy.base / "output" / "recapture"

    def written() -> set:
        return set(clouds.glob("*")) if clouds.is_dir() else set()

    before = written()
    prompt, node_id = prompt_for("ReCaptureCameraTrajectory", camera_file=METADATA)
    assert list(prompt) != [node_id] and "video" in prompt and "cloud" in prompt
    message = refusal(comfy, prompt, node_id)
    assert f"ReCapture Camera Trajectory: camera_file '{METADATA}' is not one this input takes" in message
    assert written() == before  # nothing ran


def test_every_float_and_combo_input_is_covered(comfy):
    info = comfy.object_info()
    floats, combos = set(), set()
    for node_type, spec in info.items():
        if node_type.startswith("ReCapture"):
            for field, (kind, *_) in (spec["input"].get("required", {}) | spec["input"].get("optional", {})).items():
                if kind == "FLOAT":
                    floats.add((node_type, field))
                elif kind == "COMBO" or isinstance(kind, list):
                    combos.add((node_type, field))
    assert floats == set(FLOATS)
    assert combos == set(COMBOS)
