"""The camera editor's server side in a real ComfyUI: the preset route, the custom_path input and the
ui data the editor draws after a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import torch

from comfy_harness import execution_error
from recapture import camera
from recapture.demo_clip import write_demo_clip

pytestmark = pytest.mark.comfy

REQUEST = {"preset": "orbit_left", "amount": 30.0, "easing": "linear", "frames": 9, "pivot_distance": 2.5,
           "fov_deg": 60.0}


def post_path(comfy, body) -> requests.Response:
    return requests.post(comfy.url + "/recapture/camera_path", data=body if isinstance(body, str) else json.dumps(body),
                         timeout=30)


def test_route_returns_the_library_preset_as_a_camera_file(comfy):
    r = post_path(comfy, REQUEST)
    assert r.status_code == 200, r.text
    data = r.json()
    expected = camera.preset_path("orbit_left", 9, 30.0, pivot_distance=2.5, easing="linear")
    assert data["version"] == 1 and data["convention"] == "opencv" and len(data["frames"]) == 9
    poses = torch.tensor([f["pose"] for f in data["frames"]])
    assert torch.allclose(poses, expected.poses, atol=1e-5)
    assert poses[-1, 0, 3] < -0.5  # orbit_left moves the camera to -x
    zoom = post_path(comfy, {**REQUEST, "preset": "zoom_in", "amount": 50.0}).json()
    assert zoom["frames"][-1]["fov_deg"] < 60.0


@pytest.mark.parametrize("body, words", [
    ({**REQUEST, "preset": "spin"}, ["unknown camera preset", "orbit_left"]),
    ({**REQUEST, "easing": "bouncy"}, ["unknown easing"]),
    ({**REQUEST, "frames": 0}, ["'frames'", "between 1"]),
    ({**REQUEST, "frames": 2.5}, ["'frames'", "whole number"]),
    ({**REQUEST, "amount": "lots"}, ["'amount'", "number"]),
    ({**REQUEST, "pivot_distance": 0}, ["'pivot_distance'"]),
    ("{not json", ["body must be JSON"]),
    ([1, 2], ["JSON object"]),
])
def test_route_refuses_bad_values_with_a_json_message(comfy, body, words):
    r = post_path(comfy, body)
    assert r.status_code == 400
    message = r.json()["error"]
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def sample(comfy):
    files = write_demo_clip(comfy.base / "input")
    return json.loads(files[-1].read_text())


def anchor_graph(sample: dict, **trajectory) -> dict:
    video = {"video": "recapture_sample.mp4", "start_frame": 0, "frame_count": 5, "every_nth": 1,
             "width": 256, "height": 128, "resize": "crop"}
    return {
        "1": {"class_type": "ReCaptureLoadVideo", "inputs": {**video, "frames_folder": "(none: use the video)"}},
        "2": {"class_type": "ReCaptureLoadVideo", "inputs": {**video, "frames_folder": "recapture_sample_depth/"}},
        "3": {"class_type": "ReCaptureDepthToPointCloud", "inputs": {
            "frames": ["1", 0], "depth": ["2", 0], "depth_kind": "inverse", "near": sample["near"], "far": sample["far"],
            "fov_deg": 60.0, "edge_threshold": 0.04, "preview_points": 5000}},
        "4": {"class_type": "ReCaptureCameraTrajectory", "inputs": {
            "preset": "orbit_left", "amount": 15.0, "easing": "linear", "frames": 14, "pivot_distance": 0.0,
            "camera_file": "(none: use the preset)", "point_cloud": ["3", 0], **trajectory}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }


def test_custom_path_replaces_the_preset_and_is_resampled(comfy, sample):
    truck = camera.path_to_json(camera.preset_path("truck_right", 3, 50.0, pivot_distance=2.0, easing="linear"))
    entry = comfy.run(anchor_graph(sample, custom_path=json.dumps(truck)))
    path = json.loads(entry["outputs"]["5"]["text"][0])
    assert len(path["frames"]) == 5  # resampled to the clip's frame count
    x = [f["pose"][0][3] for f in path["frames"]]
    assert x == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0], abs=1e-5)  # the custom truck, not the orbit preset
    assert all(abs(f["pose"][0][2]) < 1e-6 for f in path["frames"])  # no rotation: not an orbit


def test_empty_custom_path_keeps_the_preset_and_the_ui_data_has_the_points(comfy, sample):
    entry = comfy.run(anchor_graph(sample, custom_path=""))
    path = json.loads(entry["outputs"]["5"]["text"][0])
    assert path["frames"][-1]["pose"][0][3] < 0  # orbit_left
    editor = entry["outputs"]["4"]["recapture_camera"][0]
    assert editor["path"] == path
    assert editor["pivot_distance"] > 0 and editor["aspect"] == pytest.approx(2.0)
    points = editor["points"]
    assert 1_000 < points["count"] <= 30_000
    r = requests.get(comfy.url + "/view", params={k: points[k] for k in ("filename", "subfolder", "type")}, timeout=30)
    assert r.status_code == 200 and len(r.content) == points["count"] * 15
    xyz = np.frombuffer(r.content[: points["count"] * 12], dtype="<f4").reshape(-1, 3)
    rgb = np.frombuffer(r.content[points["count"] * 12:], dtype=np.uint8).reshape(-1, 3)
    assert (xyz[:, 2] > 0).all()  # in front of the source camera (OpenCV: +z forward)
    assert rgb.std() > 5  # real colours, not one flat value


@pytest.mark.parametrize("text, words", [
    ("{oops", ["custom_path", "not valid JSON", "clear custom_path"]),
    (json.dumps({"version": 1, "convention": "opengl", "frames": []}), ["custom_path", "convention"]),
])
def test_bad_custom_path_names_the_input_and_the_fix(comfy, sample, text, words):
    entry = comfy.wait(comfy.queue(anchor_graph(sample, custom_path=text)))
    assert entry["status"]["status_str"] == "error"
    message = execution_error(entry)
    for word in words:
        assert word in message, message
