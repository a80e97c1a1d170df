"""The real ComfyUI frontend in headless Chromium with this pack loaded."""

from __future__ import annotations

import pytest

from browser_pages import open_node_search, pack_console_errors, temp_frames

pytestmark = pytest.mark.browser


def test_extension_loads_without_console_errors(canvas, artifacts):
    names = canvas.evaluate("() => window.app.extensions.map(e => e.name)")
    assert "ReCapture.Core" in names
    canvas.screenshot(path=str(artifacts / "canvas_loaded.png"))
    assert pack_console_errors(canvas.messages) == []


def test_node_found_in_search_and_added(canvas, artifacts):
    canvas.evaluate("() => { window.app.graph.clear(); window.app.graph.setDirtyCanvas(true, true); }")
    before = 0
    # Double-clicking empty canvas opens the node search box, as a person would (and as a person would,
    # again if the first double-click came while the page was still busy: seen once on a loaded CI box).
    search = open_node_search(canvas)
    search.fill("ReCapture Load Video")
    canvas.wait_for_timeout(800)
    canvas.screenshot(path=str(artifacts / "node_search.png"))
    canvas.keyboard.press("Enter")
    canvas.wait_for_function(
        f"() => window.app.graph._nodes.filter(n => n.type === 'ReCaptureLoadVideo').length > {before}",
        timeout=10_000)
    node = canvas.evaluate(
        "() => { const n = window.app.graph._nodes.find(n => n.type === 'ReCaptureLoadVideo');"
        " return {title: n.title, widgets: n.widgets.map(w => w.name), color: n.color}; }")
    assert node["title"] == "ReCapture Load Video"
    assert {"video", "frame_count", "width", "height", "resize"} <= set(node["widgets"])
    assert node["color"] == "#2a3a4f"  # our extension's nodeCreated ran on it
    canvas.screenshot(path=str(artifacts / "node_added.png"))
    assert pack_console_errors(canvas.messages) == []


@pytest.mark.parametrize("name", ["ReCapture - anchor video and mask.json", "ReCapture - full method with SVD.json"])
def test_shipped_workflow_loads_and_matches_our_api_conversion(canvas, comfy, artifacts, name):
    """The canvas loads the file with every node type known and every link in place, and its own
    graph-to-prompt conversion equals the one the tests and `make demo` use."""
    import json

    from comfy_harness import REPO, ui_to_api
    from recapture.demo_clip import write_demo_clip

    import torch
    from safetensors.torch import save_file

    write_demo_clip(comfy.base / "input", num_frames=14)  # the combo values the workflows name
    svd = comfy.base / "models" / "checkpoints" / "svd_xt.safetensors"
    if not svd.exists():
        save_file({"placeholder": torch.zeros(1)}, str(svd))
    workflow = json.loads((REPO / "workflows" / name).read_text())
    result = canvas.evaluate("""async (wf) => {
        await window.app.loadGraphData(wf);
        const g = window.app.graph;
        const missing = g._nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
        const links = Object.keys(g.links instanceof Map ? Object.fromEntries(g.links) : g.links).length;
        const prompt = (await window.app.graphToPrompt()).output;
        return {missing, links, nodes: g._nodes.length, prompt};
    }""", workflow)
    canvas.wait_for_timeout(500)
    canvas.screenshot(path=str(artifacts / f"workflow_{name.removesuffix('.json')}.png"))
    assert result["missing"] == []
    assert result["nodes"] == len(workflow["nodes"])
    assert result["links"] == len(workflow["links"])
    info = comfy.object_info()
    ours = ui_to_api(workflow, info)

    def declared(node_type: str) -> set[str]:  # the frontend also sends values of its own widgets
        spec = info[node_type]["input"]
        return set(spec.get("required", {})) | set(spec.get("optional", {}))

    theirs = {k: {"class_type": v["class_type"],
                  "inputs": {n: x for n, x in v["inputs"].items() if n in declared(v["class_type"])}}
              for k, v in result["prompt"].items()}
    assert ours == theirs
    for warning in ("Missing", "missing", "Invalid workflow", "Alert"):  # missing nodes/models, schema errors
        assert canvas.get_by_text(warning).count() == 0, warning
    assert pack_console_errors(canvas.messages) == []


@pytest.mark.parametrize("node_type", ["ReCaptureSVDDualLoRASample", "ReCaptureSDEditRefine"])
def test_sampled_frames_play_in_their_node(canvas, comfy, artifacts, node_type):
    """The sampler and the refiner play what they made, as the node's ui output names it; unlike
    Render Anchor they have no mask-overlay toggle."""
    frames = temp_frames(comfy, "player_test", (96, 64), [(200, 30, 30), (30, 200, 30), (30, 30, 200)])
    state = canvas.evaluate("""async ([type, frames]) => {
        window.app.graph.clear();
        const node = LiteGraph.createNode(type);
        window.app.graph.add(node);
        node.onExecuted({recapture_player: [{frames}]});
        const p = node.recapturePlayer;
        p.pause(); p.show(1);
        await new Promise((ok) => { if (p.image.complete) ok(); else p.image.onload = ok; });
        const c = document.createElement("canvas");
        c.width = p.image.naturalWidth; c.height = p.image.naturalHeight;
        const ctx = c.getContext("2d"); ctx.drawImage(p.image, 0, 0);
        return {count: p.frames.length, label: p.label.textContent, size: [c.width, c.height],
                pixel: Array.from(ctx.getImageData(5, 5, 1, 1).data.slice(0, 3)),
                toggle: p.element.contains(p.checkbox)};
    }""", [node_type, frames])
    canvas.wait_for_timeout(300)
    canvas.screenshot(path=str(artifacts / f"player_{node_type}.png"))
    assert state["count"] == 3 and state["label"] == "frame 2/3"
    assert state["size"] == [96, 64] and state["pixel"] == [30, 200, 30]  # the second frame is shown
    assert state["toggle"] is False
    assert pack_console_errors(canvas.messages) == []
