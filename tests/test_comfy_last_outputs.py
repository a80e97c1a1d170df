"""POST /recapture/last_outputs in the real server: a node's last ui output from ComfyUI's history, for
the previews after a reload and on cached runs (web/last_run.js; in the browser: test_browser_previews.py)."""

from __future__ import annotations

import uuid

import pytest
import requests

pytestmark = pytest.mark.comfy

TRAJECTORY = {"class_type": "ReCaptureCameraTrajectory", "inputs": {
    "preset": "orbit_left", "amount": 10.0, "easing": "linear", "frames": 5, "pivot_distance": 2.0,
    "camera_file": "(none: use the preset)", "custom_path": ""}}
ASK = [{"id": "1", "class_type": "ReCaptureCameraTrajectory", "key": "recapture_camera"}]


def queue(comfy, prompt: dict, workflow_id: str | None) -> str:
    """As the canvas queues: the workflow (here only its id) travels in extra_pnginfo."""
    extra = {"extra_pnginfo": {"workflow": {"id": workflow_id, "nodes": []}}} if workflow_id else {}
    r = requests.post(comfy.url + "/prompt", json={"prompt": prompt, "client_id": uuid.uuid4().hex,
                                                   "extra_data": extra}, timeout=60)
    assert r.status_code == 200, r.text
    prompt_id = r.json()["prompt_id"]
    assert comfy.wait(prompt_id)["status"]["status_str"] == "success"
    return prompt_id


def ask(comfy, workflow, nodes=ASK) -> dict:
    r = requests.post(comfy.url + "/recapture/last_outputs", json={"workflow": workflow, "nodes": nodes}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


@pytest.fixture
def empty_history(comfy):
    requests.post(comfy.url + "/history", json={"clear": True}, timeout=30)
    yield
    requests.post(comfy.url + "/history", json={"clear": True}, timeout=30)


def test_the_last_run_of_the_node_in_the_same_workflow_is_found_also_after_a_cached_run(comfy, empty_history):
    workflow = str(uuid.uuid4())
    prompt = {"1": TRAJECTORY, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    assert ask(comfy, workflow) == {}
    other = {"1": {**TRAJECTORY, "inputs": {**TRAJECTORY["inputs"], "frames": 6}}, "2": prompt["2"]}
    queue(comfy, other, None)  # queued without a workflow (API, scripts): never matched
    assert ask(comfy, workflow) == {}

    first = queue(comfy, prompt, workflow)
    found = ask(comfy, workflow)
    assert found["1"]["prompt_id"] == first
    camera = found["1"]["output"]["recapture_camera"][0]
    assert camera["source"] == "preset" and len(camera["path"]["frames"]) == 5 and camera["pivot_distance"] == 2.0

    # the same prompt again: cached, ComfyUI's history keeps nothing of node 1 for it; the first run's is found
    cached = queue(comfy, prompt, workflow)
    assert "1" not in comfy.get(f"/history/{cached}")[cached]["outputs"]
    assert ask(comfy, workflow)["1"]["prompt_id"] == first
    # a new run of the node wins
    changed = queue(comfy, {"1": {**TRAJECTORY, "inputs": {**TRAJECTORY["inputs"], "frames": 7}},
                            "2": prompt["2"]}, workflow)
    assert ask(comfy, workflow)["1"]["prompt_id"] == changed

    # another workflow, another node id, another class, another ui key: nothing
    assert ask(comfy, str(uuid.uuid4())) == {}
    assert ask(comfy, workflow, [{**ASK[0], "id": "2"}, {**ASK[0], "id": "9"}]) == {}
    assert ask(comfy, workflow, [{**ASK[0], "class_type": "ReCaptureRenderAnchor"}]) == {}
    assert ask(comfy, workflow, [{**ASK[0], "key": "recapture_player"}]) == {}


@pytest.mark.parametrize("body", [b"", b"[]", b"{\"workflow\": 1, \"nodes\": []}", b"{\"workflow\": \"w\"}",
                                  b"{\"workflow\": \"w\", \"nodes\": [{\"id\": 1}]}", b"\xff", b"[" * 100_000,
                                  b"{\"workflow\": \"w\", \"nodes\": [" + b",".join([b"{}"] * 300) + b"]}"])
def test_bad_requests_are_answered_400_with_a_message(comfy, body):
    r = requests.post(comfy.url + "/recapture/last_outputs", data=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"], r.text
