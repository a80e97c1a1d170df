"""Hardening of file reads and writes in a real ComfyUI server (issue 16): frames that are links leading
out of the input folder, decompression bombs through Load Video (refused before decoding, with the
server's peak memory measured), a temp/recapture that is a link, damaged model files and bad choices
named in the node's error. The library's side is in ``test_hardening_files.py``."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_harness import ComfyError, ComfyServer, execution_error
from conftest import gif_bomb, linked_away, png_bomb, save_tiny_depth_model, save_tiny_svd_folder

pytestmark = pytest.mark.comfy
NO_FOLDER = "(none: use the video)"


def run_error(comfy: ComfyServer, prompt: dict) -> str:
    entry = comfy.wait(comfy.queue(prompt))
    assert entry["status"]["status_str"] == "error", "the prompt should have failed"
    return execution_error(entry)


def load_video(video: str = "", frames_folder: str = NO_FOLDER, **kw) -> dict:
    inputs = {"video": video, "frames_folder": frames_folder, "start_frame": 0, "frame_count": 2, "every_nth": 1,
              "width": 64, "height": 64, "resize": "crop"}
    return {"class_type": "ReCaptureLoadVideo", "inputs": {**inputs, **kw}}


def preview(node: str = "1") -> dict:
    return {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}


def write_frames(folder: Path, count: int = 2, size: tuple[int, int] = (96, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(g.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# --- 1. frames that are links leading outside the input folder -------------------------------------------
def test_frames_in_a_real_input_folder_that_link_outside_are_refused(comfy, tmp_path):
    inputs = comfy.base / "input"
    outside = write_frames(tmp_path / "outside", count=1)
    inner = write_frames(inputs / "hardening_inner", count=2)
    (inner / "0000.png").unlink()
    (inner / "0000.png").symlink_to(outside / "0000.png")  # the folder is real, one frame leads out
    # a frame linking to another file inside the input folder is fine
    ok = write_frames(inputs / "hardening_inner_ok", count=2)
    (ok / "0001.png").unlink()
    (ok / "0001.png").symlink_to(inner / "0001.png")
    try:
        message = run_error(comfy, {"1": load_video(frames_folder="hardening_inner/"), "2": preview()})
        assert message.startswith("ReCaptureLoadVideo: 'hardening_inner/0000.png' is outside ComfyUI's input "
                                  "folder (a link leading elsewhere)"), message
        assert str(outside) not in message
        # the folder picked as the video: refused before running (not a video file), or as above when it runs
        try:
            message = run_error(comfy, {"1": load_video(video="hardening_inner"), "2": preview()})
            assert "'hardening_inner/0000.png' is outside ComfyUI's input folder" in message, message
        except ComfyError as refused:
            assert "video 'hardening_inner' is not one this input takes" in str(refused)
        entry = comfy.run({"1": load_video(frames_folder="hardening_inner_ok/"), "2": preview()})
        assert len(entry["outputs"]["2"]["images"]) == 2
    finally:
        shutil.rmtree(inner)
        shutil.rmtree(ok)


# --- 2. decompression bombs ----------------------------------------------------------------------------
def test_decompression_bombs_are_refused_before_decoding(comfy):
    inputs = comfy.base / "input"
    (inputs / "hardening_bomb.gif").write_bytes(gif_bomb())
    assert (inputs / "hardening_bomb.gif").stat().st_size == 361
    bombs = inputs / "hardening_png_bombs"
    bombs.mkdir()
    for i in range(3):
        (bombs / f"{i:04d}.png").write_bytes(png_bomb(13000, 13000))
    assert sum(p.stat().st_size for p in bombs.iterdir()) < 70_000
    pid = comfy.process.pid
    try:
        rss_before = memory_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
        gif = run_error(comfy, {"1": load_video("hardening_bomb.gif", frame_count=14), "2": preview()})
        pngs = run_error(comfy, {"1": load_video(frames_folder="hardening_png_bombs/", frame_count=3), "2": preview()})
        peak_growth_mb = (memory_kb(pid, "VmHWM") - rss_before) / 1024
    finally:
        (inputs / "hardening_bomb.gif").unlink()
        shutil.rmtree(bombs)
    assert gif.startswith("ReCaptureLoadVideo: ") and "hardening_bomb.gif declares 16000x16000 pixels per frame; " \
        "the limit is 40 megapixels" in gif, gif
    assert "0000.png declares 13000x13000 pixels per frame; the limit is 40 megapixels" in pngs, pngs
    assert peak_growth_mb < 200, f"the server's memory peaked {peak_growth_mb:.0f} MB higher"
    # the server carries on
    write_frames(inputs / "hardening_after_bomb")
    try:
        comfy.run({"1": load_video(frames_folder="hardening_after_bomb/"), "2": preview()})
    finally:
        shutil.rmtree(inputs / "hardening_after_bomb")


# --- 10. temp/recapture as a link ----------------------------------------------------------------------
def test_nothing_is_written_through_a_symlinked_temp_recapture(comfy, tmp_path):
    """The camera editor's point-cloud data goes to temp/recapture/: a link there leading elsewhere is
    refused as output/recapture and models/loras/recapture are."""
    inputs = comfy.base / "input"
    write_frames(inputs / "hardening_scene", count=2, size=(64, 64))
    prompt = {
        "1": load_video(frames_folder="hardening_scene/"),
        "2": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["1", 0], "depth_kind": "inverse", "near": 1.0, "far": 10.0,
            "fov_deg": 60.0, "edge_threshold": 0.0, "preview_points": 1000}},
        "3": {"class_type": "ReCaptureCameraTrajectory", "inputs": {
            "preset": "orbit_left", "amount": 13.25, "easing": "linear", "frames": 14, "pivot_distance": 0.0,
            "camera_file": "(none: use the preset)", "point_cloud": ["2", 0]}},
        "4": {"class_type": "ReCaptureRenderAnchor", "inputs": {"point_cloud": ["2", 0], "camera_path": ["3", 0],
                                                               "dilate_holes": 0}},
        "5": preview("4"),
    }
    outside = tmp_path / "outside"
    outside.mkdir()
    try:
        with linked_away(comfy.base / "temp" / "recapture", outside):
            message = run_error(comfy, prompt)
    finally:
        shutil.rmtree(inputs / "hardening_scene")
    assert list(outside.iterdir()) == []
    assert message.startswith("ReCaptureCameraTrajectory: ") and "is a link to" in message \
        and "outside ComfyUI's temp folder" in message, message


# --- 11. damaged model files and bad choices -----------------------------------------------------------
def test_a_damaged_depth_model_is_named_in_the_node(comfy):
    folder = save_tiny_depth_model(comfy.base / "models" / "depth" / "hardening-damaged")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")  # "header too large"
    write_frames(comfy.base / "input" / "hardening_depth", count=1, size=(64, 64))
    prompt = {"1": load_video(frames_folder="hardening_depth/", frame_count=1),
              "2": {"class_type": "ReCaptureEstimateDepth", "inputs": {
                  "frames": ["1", 0], "model": "hardening-damaged", "batch_size": 1}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}}}
    try:
        message = run_error(comfy, prompt)
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(comfy.base / "input" / "hardening_depth")
    assert message.startswith("ReCaptureEstimateDepth: ") and "hardening-damaged/model.safetensors is damaged or " \
        "incomplete" in message and "download it again" in message, message


def test_a_damaged_svd_folder_and_a_bogus_dtype_are_named_in_the_node(comfy):
    diffusers = comfy.base / "models" / "diffusers"
    save_tiny_svd_folder(diffusers / "hardening-svd")
    shutil.copytree(diffusers / "hardening-svd", diffusers / "hardening-damaged-svd")
    header = b"{}"  # a weight file with an empty header: diffusers left the UNet on the meta device
    (diffusers / "hardening-damaged-svd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header)

    def load(model: str, dtype: str) -> dict:
        return {"1": {"class_type": "ReCaptureLoadSVD", "inputs": {"model": model, "dtype": dtype}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}

    try:
        damaged = run_error(comfy, load("diffusers/hardening-damaged-svd", "fp32"))
        try:
            bogus = run_error(comfy, load("diffusers/hardening-svd", "bogus"))
        except ComfyError as refused:  # ComfyUI itself refused the value before running: as good
            bogus = str(refused)
    finally:
        shutil.rmtree(diffusers / "hardening-svd")
        shutil.rmtree(diffusers / "hardening-damaged-svd")
    assert damaged.startswith("ReCaptureLoadSVD: ") and "hardening-damaged-svd/unet/diffusion_pytorch_model." \
        "safetensors is damaged or incomplete (it holds no weights): download it again" in damaged, damaged
    assert "dtype" in bogus and "'bogus'" in bogus and "auto" in bogus and "KeyError" not in bogus, bogus
