"""The shipped workflows as a person sees them in the real frontend: laid out without overlaps in the
classic canvas and in the Vue node renderer ("Nodes 2.0"), before and after a run (with its previews,
players and progress text), every node inside its group; and listed in ComfyUI's template browser with
their titles and thumbnails."""

from __future__ import annotations

import json

import pytest

from browser_pages import pack_console_errors
from comfy_harness import PACK_DIR_NAME, REPO

pytestmark = pytest.mark.browser

WORKFLOWS = sorted(p.name for p in (REPO / "workflows").glob("*.json"))
ANCHOR_ONLY = "ReCapture - anchor video and mask.json"  # the workflow that runs on the CPU in seconds
SETTING = "Comfy.VueNodes.Enabled"

# Every node's box and every group's, in graph units. Each node is brought into view at scale 1 first (the
# frontend culls what is off screen). Classic canvas: the node with its title, the rows its widgets were
# laid out in and the DOM elements drawn for them (a preview that spills out shows); Vue nodes: the drawn node.
LAYOUT_JS = """async () => {
  const app = window.app, c = app.canvas, wait = (ms) => new Promise((ok) => setTimeout(ok, ms));
  const vue = !!app.extensionManager.setting.get('%s');
  const toGraph = (r) => {
    const at = c.canvas.getBoundingClientRect();
    return [(r.left - at.left) / c.ds.scale - c.ds.offset[0], (r.top - at.top) / c.ds.scale - c.ds.offset[1],
            r.width / c.ds.scale, r.height / c.ds.scale];
  };
  const union = (a, b) => {
    const x = Math.min(a[0], b[0]), y = Math.min(a[1], b[1]);
    return [x, y, Math.max(a[0] + a[2], b[0] + b[2]) - x, Math.max(a[1] + a[3], b[1] + b[3]) - y];
  };
  const nodes = [];
  for (const node of app.graph._nodes) {
    c.ds.scale = 1;
    c.ds.offset = [120 - node.pos[0], 200 - node.pos[1]];
    c.setDirty(true, true);
    await wait(250);
    let box;
    if (vue) {
      box = toGraph(document.querySelector(`[data-node-id="${node.id}"]`).getBoundingClientRect());
    } else {
      box = [...node.getBounding()];
      for (const w of node.widgets ?? []) {
        if (w.computedHeight && w.y != null) box = union(box, [node.pos[0], node.pos[1] + w.y, node.size[0], w.computedHeight]);
        const r = w.element?.getBoundingClientRect?.();
        if (r && r.width > 0 && r.height > 0) box = union(box, toGraph(r));
      }
    }
    nodes.push({id: node.id, title: node.title, box, widgets: (node.widgets ?? []).map((w) => w.name)});
  }
  const groups = app.graph._groups.map((g) => ({title: g.title, box: [...g._bounding], titleHeight: g.titleHeight}));
  return {nodes, groups};
}""" % SETTING

# Brings the whole graph into view (for the screenshots).
FIT_JS = """() => {
  const app = window.app, c = app.canvas, rect = c.canvas.getBoundingClientRect();
  const boxes = [...app.graph._nodes.map((n) => n.getBounding()), ...app.graph._groups.map((g) => g._bounding)];
  const x0 = Math.min(...boxes.map((b) => b[0])), y0 = Math.min(...boxes.map((b) => b[1]));
  const x1 = Math.max(...boxes.map((b) => b[0] + b[2])), y1 = Math.max(...boxes.map((b) => b[1] + b[3]));
  const scale = Math.min((rect.width - 120) / (x1 - x0), (rect.height - 160) / (y1 - y0));
  c.ds.scale = scale;
  c.ds.offset = [80 / scale - x0, 110 / scale - y0];
  c.setDirty(true, true);
}"""

# Records the server's messages that change what the nodes show (to replay them on other pages).
RECORD_JS = """() => {
  window.recaptureRecorded = [];
  const api = window.comfyAPI.api.api;
  for (const type of ['progress_text', 'executed', 'execution_success', 'execution_error'])
    api.addEventListener(type, (e) => window.recaptureRecorded.push({type, detail: e.detail}));
}"""

# Sends messages as the server's, through the frontend's own handlers; spaced as a run spaces them.
REPLAY_JS = """async (messages) => {
  const api = window.comfyAPI.api.api;
  for (const m of messages) {
    api.dispatchCustomEvent(m.type, m.detail);
    await new Promise((ok) => setTimeout(ok, 150));
  }
  await new Promise((ok) => setTimeout(ok, 3000));  // the previews load and size their nodes
}"""


def overlap(a, b, tolerance: float = 0.5) -> bool:
    return (a[0] + tolerance < b[0] + b[2] and b[0] + tolerance < a[0] + a[2]
            and a[1] + tolerance < b[1] + b[3] and b[1] + tolerance < a[1] + a[3])


def inside(box, group, tolerance: float = 0.5) -> bool:
    g = group["box"]
    return (box[0] >= g[0] - tolerance and box[0] + box[2] <= g[0] + g[2] + tolerance
            and box[1] >= g[1] + group["titleHeight"] - tolerance and box[1] + box[3] <= g[1] + g[3] + tolerance)


def layout_problems(page) -> list[str]:
    """Nodes that overlap, nodes not wholly inside the group they reach into (below its title), groups
    that overlap."""
    layout = page.evaluate(LAYOUT_JS)
    nodes, groups, problems = layout["nodes"], layout["groups"], []

    def name(n):
        return f"{n['title']} (#{n['id']}, {[round(v) for v in n['box']]})"

    for i, a in enumerate(nodes):
        problems += [f"{name(a)} overlaps {name(b)}" for b in nodes[i + 1:] if overlap(a["box"], b["box"])]
        reached = [g for g in groups if overlap(a["box"], g["box"])]
        problems += [f"{name(a)} is not inside group {g['title']!r} {[round(v) for v in g['box']]}"
                     for g in reached if not inside(a["box"], g)]
        if len(reached) > 1:
            problems.append(f"{name(a)} is in {len(reached)} groups")
    for i, g in enumerate(groups):
        problems += [f"group {g['title']!r} overlaps group {h['title']!r}" for h in groups[i + 1:]
                     if overlap(g["box"], h["box"])]
    return problems


def prepare_inputs(comfy) -> None:
    """The files the workflows name: the bundled sample, a placeholder for the full workflow's SVD."""
    import torch
    from safetensors.torch import save_file

    from recapture.demo_clip import write_demo_clip

    write_demo_clip(comfy.base / "input", num_frames=14)
    svd = comfy.base / "models" / "checkpoints" / "svd_xt.safetensors"
    if not svd.exists():
        save_file({"placeholder": torch.zeros(1)}, str(svd))


def set_vue_nodes(page, on: bool) -> None:
    page.evaluate("async (on) => { await window.app.extensionManager.setting.set('%s', on); }" % SETTING, on)
    page.wait_for_timeout(500)


def load(page, name: str) -> dict:
    workflow = json.loads((REPO / "workflows" / name).read_text())
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    page.wait_for_timeout(3000)  # the video uploads' previews load and size their nodes
    return workflow


def screenshot(page, path) -> None:
    page.evaluate(FIT_JS)
    page.wait_for_timeout(600)
    page.screenshot(path=str(path))


@pytest.fixture(scope="module")
def anchor_run(browser, comfy, artifacts):
    """The anchor-only workflow run for real in the classic canvas: its layout after the run, what the
    nodes show then, and the server's messages of the run (to replay on other pages)."""
    prepare_inputs(comfy)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto(comfy.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
        page.wait_for_timeout(1500)
        set_vue_nodes(page, False)
        load(page, ANCHOR_ONLY)
        page.evaluate(RECORD_JS)
        page.evaluate("async () => { await window.app.queuePrompt(0); }")
        page.wait_for_function("() => window.recaptureRecorded.some((m) => m.type.startsWith('execution_'))",
                               timeout=600_000, polling=500)
        page.wait_for_timeout(3000)
        messages = page.evaluate("() => window.recaptureRecorded")
        widgets = page.evaluate("() => Object.fromEntries(window.app.graph._nodes.map((n) => [n.type + ' ' + n.id, "
                                "(n.widgets ?? []).map((w) => w.name)]))")
        problems = layout_problems(page)
        screenshot(page, artifacts / "layout_anchor_only_classic_after_run.png")
        yield {"messages": messages, "widgets": widgets, "problems": problems}
    finally:
        page.close()


def replay_messages(comfy, workflow: dict, run: dict) -> list[dict]:
    """The anchor-only run's messages for ``workflow``: as recorded for the nodes it shares, and for the
    full workflow's Stage 2 nodes what they show after their run (the loss curve, played frames, the
    longest progress text each writes)."""
    from PIL import Image

    from build_workflows import PROGRESS_TEXT
    from recapture.loss_plot import loss_curve_image

    curve = loss_curve_image([(0.2 / (1 + i), 0.4 / (1 + i)) for i in range(40)])
    Image.fromarray((curve.numpy() * 255).round().astype("uint8")).save(comfy.base / "temp" / "layout_test_loss.png")
    loss = {"images": [{"filename": "layout_test_loss.png", "subfolder": "", "type": "temp"}]}
    recorded = [m for m in run["messages"] if m["type"] in ("progress_text", "executed")]
    by_type = {}
    types = {str(n["id"]): n["type"] for n in json.loads((REPO / "workflows" / ANCHOR_ONLY).read_text())["nodes"]}
    for m in recorded:
        if m["type"] == "executed":
            by_type.setdefault(types[str(m["detail"]["node"])], m["detail"]["output"])
    outputs = {"ReCaptureTrainMaskedLoRA": loss, "PreviewImage": loss, "SaveVideo": by_type["SaveVideo"],
               "ReCaptureSVDDualLoRASample": by_type["ReCaptureRenderAnchor"],
               "ReCaptureSDEditRefine": by_type["ReCaptureRenderAnchor"]}
    ids = {str(n["id"]) for n in workflow["nodes"]}
    shared = {str(n["id"]) for n in workflow["nodes"] if types.get(str(n["id"])) == n["type"]}
    messages = [m for m in recorded
                if str(m["detail"].get("nodeId", m["detail"].get("node"))) in shared]
    for node in workflow["nodes"]:
        key = str(node["id"])
        if key in shared or key not in ids:
            continue
        if node["type"] in PROGRESS_TEXT:
            messages.append({"type": "progress_text", "detail": {"nodeId": key, "text": PROGRESS_TEXT[node["type"]]}})
        if node["type"] in outputs:
            messages.append({"type": "executed", "detail": {"node": key, "display_node": key, "prompt_id": "replay",
                                                            "output": outputs[node["type"]]}})
    return messages


def test_anchor_only_workflow_after_a_real_run_has_room_for_what_the_run_shows(anchor_run):
    widgets = anchor_run["widgets"]
    # the run showed what the layout makes room for: progress text, saved videos' players
    assert "$$node-text-preview" in widgets["ReCaptureLoadVideo 1"], widgets
    assert "video-preview" in widgets["SaveVideo 7"] and "video-preview" in widgets["SaveVideo 10"], widgets
    assert anchor_run["problems"] == []


@pytest.mark.parametrize("renderer", ["classic", "vue"])
@pytest.mark.parametrize("name", WORKFLOWS)
def test_shipped_layout_has_no_overlaps_before_and_after_a_run(canvas, comfy, artifacts, anchor_run, name, renderer):
    page = canvas
    page.set_viewport_size({"width": 1600, "height": 1100})
    set_vue_nodes(page, renderer == "vue")
    try:
        workflow = load(page, name)
        if renderer == "vue":
            assert page.locator("[data-node-id]").count() == len(workflow["nodes"])  # every node drawn by Vue
        before = layout_problems(page)
        screenshot(page, artifacts / f"layout_{name.removesuffix('.json')}_{renderer}.png")
        page.evaluate(REPLAY_JS, replay_messages(comfy, workflow, anchor_run))
        after = layout_problems(page)
        screenshot(page, artifacts / f"layout_{name.removesuffix('.json')}_{renderer}_after_run.png")
    finally:
        set_vue_nodes(page, False)  # the setting is saved on the server: leave it as the other tests expect
    assert before == []
    assert after == []
    assert pack_console_errors(page.messages) == []


def test_template_browser_shows_the_workflows_with_titles_and_thumbnails(canvas, comfy, artifacts):
    """ComfyUI 0.3.75 lists a custom node pack's workflows/ as templates: each titled by its file name, with
    ``<name>.jpg`` beside it as its thumbnail (frontend 1.32's template store; no other metadata is read)."""
    page = canvas
    names = [n.removesuffix(".json") for n in WORKFLOWS]
    assert sorted(comfy.get("/workflow_templates")[PACK_DIR_NAME]) == sorted(names)
    responses = []
    page.on("response", lambda r: responses.append((r.url, r.status)) if "/workflow_templates" in r.url else None)
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    dialog = page.get_by_role("dialog")
    dialog.wait_for(state="visible", timeout=20_000)
    dialog.get_by_text(PACK_DIR_NAME, exact=True).first.click()  # the pack's category, under Extensions
    for name in names:
        dialog.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=20_000)  # the card's title
    # the cards' thumbnails (fetched, then shown from blob: URLs) have loaded
    page.wait_for_function("(n) => [...document.querySelectorAll('[role=dialog] img')]"
                           ".filter((img) => img.complete && img.naturalWidth > 0).length >= n",
                           arg=len(names), timeout=20_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(artifacts / "template_browser.png"))
    from urllib.parse import unquote

    thumbnails = {unquote(url).rsplit("/", 1)[-1]: status for url, status in responses if url.endswith(".jpg")}
    assert thumbnails == {f"{name}.jpg": 200 for name in names}
    assert [(url, status) for url, status in responses if status >= 400] == []
    assert pack_console_errors(page.messages) == []
