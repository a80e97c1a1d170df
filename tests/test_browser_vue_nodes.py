"""The pack's in-node views under the frontend's Vue node renderer ("Nodes 2.0", a setting in
frontend 1.32 that later frontends turn on by default): they must draw and play there too."""

from __future__ import annotations

import json

import pytest

from browser_pages import changed, pack_console_errors, pixels, set_widget, temp_frames, wait_status
from comfy_harness import REPO

pytestmark = pytest.mark.browser

SETTING = "Comfy.VueNodes.Enabled"


@pytest.fixture
def vue_canvas(canvas):
    set_js = "async (on) => { await window.app.extensionManager.setting.set('%s', on); }" % SETTING
    canvas.evaluate(set_js, True)
    canvas.wait_for_timeout(500)
    yield canvas
    canvas.evaluate(set_js, False)  # the setting is saved on the server: leave it as the other tests expect


def test_editor_and_player_work_under_vue_nodes(vue_canvas, comfy, artifacts):
    from recapture.demo_clip import write_demo_clip

    page = vue_canvas
    write_demo_clip(comfy.base / "input", num_frames=14)
    workflow = json.loads((REPO / "workflows" / "ReCapture - anchor video and mask.json").read_text())
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    ids = page.evaluate("""() => Object.fromEntries(window.app.graph._nodes
        .filter(n => n.type.startsWith('ReCapture')).map(n => [n.type, n.id]))""")
    trajectory, render = ids["ReCaptureCameraTrajectory"], ids["ReCaptureRenderAnchor"]
    assert page.locator("[data-node-id]").count() == len(workflow["nodes"])  # every node drawn by Vue
    wait_status(page, trajectory, "orbit_left 15")
    page.wait_for_timeout(500)

    # the editor sits in its Vue node, visible, and draws; changing the preset redraws it
    box = page.evaluate("(id) => window.app.graph.getNodeById(id).recaptureEditor.canvas.getBoundingClientRect().toJSON()",
                        trajectory)
    assert box["width"] > 150 and box["height"] > 80, box
    node_box = page.locator(f"[data-node-id='{trajectory}']").bounding_box()
    assert node_box["x"] <= box["x"] and box["x"] + box["width"] <= node_box["x"] + node_box["width"] + 1
    orbit = pixels(page, trajectory)
    assert orbit["drawn"] > 2_000 and orbit["distinct"] > 10
    set_widget(page, trajectory, "preset", "pedestal_up")
    wait_status(page, trajectory, "pedestal_up")
    assert changed(orbit, pixels(page, trajectory)) > 100

    # the player sits in Render Anchor's Vue node and shows the frames the node's ui output names
    frames = temp_frames(comfy, "vue_player", (128, 72), [(200, 30, 30), (30, 200, 30)])
    shown = page.evaluate("""async ([id, frames]) => {
        const node = window.app.graph.getNodeById(id);
        node.onExecuted({recapture_player: [{frames, overlay: frames}]});
        const p = node.recapturePlayer; p.pause(); p.show(1);
        await new Promise((ok) => { if (p.image.complete) ok(); else p.image.onload = ok; });
        const r = p.image.getBoundingClientRect();
        return {width: r.width, height: r.height, natural: p.image.naturalWidth, label: p.label.textContent,
                toggle: p.element.contains(p.checkbox)};
    }""", [render, frames])
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "vue_nodes_anchor_workflow.png"))
    assert shown["natural"] == 128 and shown["width"] > 100 and shown["label"] == "frame 2/2" and shown["toggle"]
    assert pack_console_errors(page.messages) == []
