"""What the canvas gets from the server before anything runs (issue 17): one validation message per
problem, a missing or wrong SVD model refused on Load SVD alone so that Stage 1 still saves its videos,
node library folders in pipeline order and search aliases, through a real ComfyUI's HTTP API."""

from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from comfy_harness import REPO, ui_to_api
from recapture.demo_clip import write_demo_clip

server = pytest.mark.comfy  # every test but the source check starts the server

NO_FOLDER = "(none: use the video)"
REFRESH = "press R to refresh the node definitions"
PIPELINE = {  # node -> its folder in the node library, numbered in pipeline order
    "ReCaptureLoadVideo": "ReCapture/1 video",
    "ReCaptureEstimateDepth": "ReCapture/2 depth & point cloud",
    "ReCaptureDepthToPointCloud": "ReCapture/2 depth & point cloud",
    "ReCaptureCameraTrajectory": "ReCapture/3 camera & anchor",
    "ReCaptureRenderAnchor": "ReCapture/3 camera & anchor",
    "ReCaptureLoadSVD": "ReCapture/4 svd",
    "ReCaptureTrainMaskedLoRA": "ReCapture/4 svd",
    "ReCaptureLoadLoRA": "ReCapture/4 svd",
    "ReCaptureSVDDualLoRASample": "ReCapture/4 svd",
    "ReCaptureSDEditRefine": "ReCapture/4 svd",
}


@pytest.fixture(scope="module")
def sample(comfy):
    """The bundled sample clip and its depth frames in the input folder (the names the workflows use)."""
    return write_demo_clip(comfy.base / "input", num_frames=14)


def post(comfy, prompt: dict) -> requests.Response:
    """POST /prompt as the canvas does (NaN allowed in the body)."""
    body = json.dumps({"prompt": prompt, "client_id": "canvas-validation"})
    return requests.post(comfy.url + "/prompt", data=body, headers={"Content-Type": "application/json"}, timeout=60)


def load_video(**changes) -> dict:
    inputs = {"video": "recapture_sample.mp4", "frames_folder": NO_FOLDER, "start_frame": 0, "frame_count": 2,
              "every_nth": 1, "width": 64, "height": 64, "resize": "crop"}
    return {"class_type": "ReCaptureLoadVideo", "inputs": inputs | changes}


# --- one message per problem (item 7) -------------------------------------------------------------
@server
@pytest.mark.parametrize("changes, expected", [
    ({"width": 100}, "width and height must be multiples of 64"),
    ({"height": 8192}, "height must be between 64 and 4096, got 8192"),
    ({"video": "not_there.mp4"}, "video 'not_there.mp4' is not in ComfyUI's input folder"),
    ({"resize": "squash"}, "resize 'squash' is not one of its choices"),
])
def test_a_bad_load_video_input_gives_exactly_one_error_entry(comfy, sample, changes, expected):
    r = post(comfy, {"1": load_video(**changes), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert r.status_code == 400, r.text[:500]
    errors = r.json()["node_errors"]
    assert set(errors) == {"1"}, errors
    entries = errors["1"]["errors"]
    assert len(entries) == 1, [e["details"] for e in entries]
    assert entries[0]["details"].startswith("ReCapture Load Video: ") and expected in entries[0]["details"], entries


@server
def test_other_nodes_report_one_entry_per_problem_too(comfy, sample):
    """A node that declares many inputs in validate_inputs (eight for the sampler, five for the point
    cloud): one entry, naming the input at fault; the rest of the prompt still validates."""
    prompt = {
        "1": load_video(),
        "2": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["1", 0], "depth_kind": "inverse", "near": 1.0, "far": 10.0,
            "fov_deg": math.nan, "edge_threshold": 0.04, "preview_points": 1000}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    r = post(comfy, prompt)
    assert r.status_code == 200, r.text[:500]  # the other output (the frames' preview) runs
    errors = r.json()["node_errors"]
    assert set(errors) == {"2"}, errors
    entries = errors["2"]["errors"]
    assert len(entries) == 1 and "fov_deg must be a finite number" in entries[0]["details"], entries
    comfy.wait(r.json()["prompt_id"], timeout=300)


@server
def test_a_good_prompt_still_validates(comfy, sample):
    entry = comfy.run({"1": load_video(), "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    assert len(entry["outputs"]["2"]["images"]) == 2


# --- without SVD, Stage 1 still saves its videos (item 4) ----------------------------------------------
@contextmanager
def no_svd_models(base: Path):
    """Every SVD model the session's other tests installed moved out of models/ for the block."""
    from recapture.svd import is_diffusers_svd_folder, is_svd_checkpoint, safetensors_keys

    aside = base / "svd-aside"
    aside.mkdir(exist_ok=True)
    moved = []
    for path in [*(base / "models" / "checkpoints").glob("*.safetensors"), *(base / "models" / "diffusers").iterdir()]:
        try:
            svd = is_diffusers_svd_folder(path) if path.is_dir() else is_svd_checkpoint(safetensors_keys(path))
        except (OSError, ValueError):
            svd = False
        if svd:
            target = aside / f"{path.parent.name}--{path.name}"
            shutil.move(str(path), str(target))
            moved.append((target, path))
    try:
        yield
    finally:
        for target, path in moved:
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            shutil.move(str(target), str(path))


def full_workflow_prompt(comfy) -> dict:
    """workflows/ReCapture - full method with SVD.json as the canvas queues it, small enough for a CPU (as in test_workflows)."""
    workflow = json.loads((REPO / "workflows" / "ReCapture - full method with SVD.json").read_text())
    prompt = ui_to_api(workflow, comfy.object_info())
    for node in prompt.values():
        if node["class_type"] == "ReCaptureLoadVideo":
            node["inputs"].update(width=64, height=64, frame_count=4)
    return prompt


@server
@pytest.mark.parametrize("installed", ["nothing", "a Stable Diffusion 1.5 file named svd_xt.safetensors"])
def test_full_workflow_without_svd_saves_the_anchor_and_mask(comfy, sample, installed):
    import torch
    from safetensors.torch import save_file

    checkpoints = comfy.base / "models" / "checkpoints"
    with no_svd_models(comfy.base):
        impostor = checkpoints / "svd_xt.safetensors"
        if installed != "nothing":
            save_file({"cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1),
                       "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(impostor))
        try:
            options = comfy.object_info("ReCaptureLoadSVD")["ReCaptureLoadSVD"]["input"]["required"]["model"][1]
            assert options["options"] == [], options  # nothing that is not SVD is offered
            prompt = full_workflow_prompt(comfy)
            load_svd = next(k for k, v in prompt.items() if v["class_type"] == "ReCaptureLoadSVD")
            r = post(comfy, prompt)
            assert r.status_code == 200, r.text[:1000]  # partial: the outputs that need SVD are dropped
            errors = r.json()["node_errors"]
            assert set(errors) == {load_svd}, errors
            assert len(errors[load_svd]["errors"]) == 1, errors
            message = errors[load_svd]["errors"][0]["details"]
            assert message.startswith("ReCapture Load SVD: model 'checkpoints/svd_xt.safetensors' is not"), message
            assert "svd_xt.safetensors" in message and "models/checkpoints/" in message and REFRESH in message
            if installed != "nothing":
                assert "it looks like a Stable Diffusion 1.x/2.x checkpoint" in message, message
            entry = comfy.wait(r.json()["prompt_id"], timeout=600)
        finally:
            impostor.unlink(missing_ok=True)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = {item["filename"].split("_")[0]: comfy.base / "output" / item["subfolder"] / item["filename"]
             for output in entry["outputs"].values() for item in output.get("images", [])
             if item["filename"].endswith(".mp4")}
    assert set(saved) == {"anchor", "mask"}, saved  # Stage 1's videos; the re-filmed one needs SVD
    assert all(path.is_file() and path.stat().st_size > 0 for path in saved.values())


def test_the_advice_says_press_r_wherever_the_pack_says_refresh():
    """Files added while the page is open appear after "Refresh Node Definitions" (R), not a page reload."""
    import re

    texts = {p: p.read_text() for p in [*(REPO / "nodes").glob("*.py"), *(REPO / "recapture").glob("*.py"),
                                        *(REPO / "web").glob("*.js")]}
    for path, text in texts.items():
        for line in text.splitlines():
            advice = re.search(r"refresh(ing)? (the|it)\b|reload(ing)? the page", line, re.IGNORECASE)
            if advice and "Refresh Node" not in line:
                assert "REFRESH" in line or REFRESH in line, f"{path.name}: {line.strip()}"


# --- where a person looks for the nodes (item 9) ---------------------------------------------------------
@server
def test_library_folders_follow_the_pipeline(comfy):
    info = comfy.object_info()
    assert {name: info[name]["category"] for name in PIPELINE} == PIPELINE
    order = list(PIPELINE.values())
    assert order == sorted(order)  # the library sorts folders by name: numbered, they read in pipeline order


@server
def test_nodes_have_search_aliases(comfy):
    info = comfy.object_info()
    aliases = {name: info[name].get("search_aliases") or [] for name in PIPELINE}
    assert all("recapture" in words for words in aliases.values()), aliases
    assert {"camera path", "orbit", "novel view"} <= set(aliases["ReCaptureCameraTrajectory"])
    assert {"novel view", "re-film"} <= set(aliases["ReCaptureRenderAnchor"])
    assert "re-film" in aliases["ReCaptureLoadVideo"] and "point cloud" in aliases["ReCaptureDepthToPointCloud"]
    assert all(isinstance(w, str) and w == w.lower() for words in aliases.values() for w in words)
