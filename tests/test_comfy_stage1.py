"""Stage 1 nodes in the real server on a real video, and what a person sees when the input is wrong."""

from __future__ import annotations

import json

import av
import pytest

from comfy_harness import ComfyError, execution_error
from conftest import save_tiny_depth_model

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def bunny(comfy, real_video):
    """Big Buck Bunny uploaded the way the canvas' upload button does it."""
    return comfy.upload_input(real_video)


@pytest.fixture(scope="module")
def depth_model(comfy):
    save_tiny_depth_model(comfy.base / "models" / "depth" / "tiny-dpt")
    return "tiny-dpt"


def load_video(video: str, **kw) -> dict:
    inputs = {"video": video, "frames_folder": "(none: use the video)", "start_frame": 0, "frame_count": 6,
              "every_nth": 1, "width": 256, "height": 128, "resize": "crop"}
    return {"class_type": "ReCaptureLoadVideo", "inputs": {**inputs, **kw}}


def stage1(video_node: dict, depth_model: str, trajectory: dict | None = None) -> dict:
    return {
        "1": video_node,
        "2": {"class_type": "ReCaptureEstimateDepth", "inputs": {"frames": ["1", 0], "model": depth_model,
                                                                "batch_size": 4}},
        "3": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["2", 0], "depth_kind": "inverse", "near": 1.0, "far": 10.0,
            "fov_deg": 60.0, "edge_threshold": 0.04, "preview_points": 5000}},
        "4": {"class_type": "ReCaptureCameraTrajectory", "inputs": {
            "preset": "dolly_in", "amount": 10.0, "easing": "linear", "frames": 14, "pivot_distance": 0.0,
            "camera_file": "(none: use the preset)", "point_cloud": ["3", 0], **(trajectory or {})}},
        "5": {"class_type": "ReCaptureRenderAnchor", "inputs": {"point_cloud": ["3", 0], "camera_path": ["4", 0],
                                                               "dilate_holes": 0}},
        "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["1", 1]}},
        "7": {"class_type": "SaveVideo", "inputs": {"video": ["6", 0], "filename_prefix": "test/stage1",
                                                    "format": "auto", "codec": "auto"}},
    }


def test_real_video_with_estimated_depth_to_anchor(comfy, bunny, depth_model):
    entry = comfy.run(stage1(load_video(bunny, start_frame=10, every_nth=2), depth_model))
    saved = entry["outputs"]["7"]["images"][0]
    with av.open(str(comfy.base / "output" / saved["subfolder"] / saved["filename"])) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
        assert float(s.average_rate) == pytest.approx(12.5)  # 25 fps, every 2nd frame
    assert len(frames) == 6 and (frames[0].width, frames[0].height) == (256, 128)
    # the render node's player gets every frame, plain and with the holes painted
    import numpy as np
    from PIL import Image

    player = entry["outputs"]["5"]["recapture_player"][0]
    assert len(player["frames"]) == len(player["overlay"]) == 6

    def picture(ref) -> np.ndarray:
        with Image.open(comfy.base / ref["type"] / ref["subfolder"] / ref["filename"]) as im:
            return np.asarray(im.convert("RGB")).astype(int)

    plain, overlay = picture(player["frames"][-1]), picture(player["overlay"][-1])
    assert plain.shape == overlay.shape == (128, 256, 3)
    holes = (overlay != plain).any(-1)  # the tiny random depth model's cloud leaves many holes, not all
    assert 0.01 < holes.mean() < 0.99
    assert (overlay[holes][:, 0] > overlay[holes][:, 1] + 80).all()  # painted magenta-red


def run_error(comfy, prompt: dict) -> str:
    entry = comfy.wait(comfy.queue(prompt))
    assert entry["status"]["status_str"] == "error"
    return execution_error(entry)


def test_errors_name_the_problem_and_the_fix_and_the_server_carries_on(comfy, bunny, depth_model):
    too_long = run_error(comfy, stage1(load_video(bunny, start_frame=120, frame_count=14), depth_model))
    assert "ReCaptureLoadVideo" in too_long and "has 132 frames" in too_long and "lower the frame count" in too_long

    (comfy.base / "input" / "bad_path.json").write_text(json.dumps(
        {"version": 1, "convention": "opencv", "frames": [{"pose": [[1, 0, 0], [0, 1, 0]]}]}))
    bad_file = run_error(comfy, stage1(load_video(bunny), depth_model, {"camera_file": "bad_path.json"}))
    assert "frame 0: 'pose' must be a 4x4" in bad_file

    mismatched = stage1(load_video(bunny), depth_model)
    mismatched["8"] = load_video(bunny, width=128, height=128)
    mismatched["3"]["inputs"]["depth"] = ["8", 0]
    mismatched["3"]["inputs"]["depth_kind"] = "inverse"
    assert "another aspect ratio" in run_error(comfy, mismatched)

    # the next prompt runs normally
    comfy.run(stage1(load_video(bunny), depth_model))


def test_sizes_that_are_not_multiples_of_64_are_refused_before_running(comfy, bunny, depth_model):
    with pytest.raises(ComfyError, match="multiples of 64"):
        comfy.queue(stage1(load_video(bunny, width=100), depth_model))


def test_core_video_input_is_used_instead_of_the_file(comfy, bunny):
    """Core Load Video -> our loader gives the same frames as picking the file; a video made of
    in-memory frames (core Create Video) works too."""
    import numpy as np
    from PIL import Image

    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": bunny}},
        "2": load_video(bunny, start_frame=3, frame_count=4, width=128, height=64),
        "3": load_video(bunny, start_frame=3, frame_count=4, width=128, height=64),
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 5.0}},
        "5": load_video(bunny, frame_count=2, every_nth=2, width=128, height=64),
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    prompt["2"]["inputs"]["video_input"] = ["1", 0]
    prompt["5"]["inputs"]["video_input"] = ["4", 0]
    entry = comfy.run(prompt)

    def frames(node: str) -> list[np.ndarray]:
        return [np.asarray(Image.open(comfy.base / i["type"] / i["subfolder"] / i["filename"]))
                for i in entry["outputs"][node]["images"]]

    from_video, from_file = frames("6"), frames("7")
    assert len(from_video) == 4 and all((a == b).all() for a, b in zip(from_video, from_file))
    in_memory = frames("8")  # frames 0 and 2 of the 4 in-memory frames = source frames 3 and 5
    assert len(in_memory) == 2 and (in_memory[0] == from_file[0]).all() and (in_memory[1] == from_file[2]).all()
