"""Builds the shipped workflows in the real ComfyUI canvas and saves what the canvas serialises.

Run after changing a node's inputs: `python scripts/build_workflows.py` (needs `make setup`). The graph
is made with the frontend's own LiteGraph API in headless Chromium, so `workflows/*.json` are exactly
the UI format a person's canvas saves, with the widget order of the current node schemas.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from comfy_harness import REPO, ComfyServer

sys.path.insert(0, str(REPO))
from recapture.demo_clip import write_demo_clip  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# A graph spec: nodes in columns (stacked top to bottom with their real sizes), widget values by name,
# links by output and input name, groups by member node ids, notes placed in a column too.
ANCHOR_ONLY = {
    "file": "recapture_anchor_only.json",
    "overview": "anchor_workflow.png",
    "nodes": [
        {"id": 1, "type": "ReCaptureLoadVideo", "col": 0, "title": "Source video",
         "widgets": {"video": "recapture_sample.mp4", "frame_count": 14, "width": 1024, "height": 576}},
        {"id": 2, "type": "ReCaptureLoadVideo", "col": 0, "title": "Depth (16-bit inverse-depth frames)",
         "widgets": {"video": "recapture_sample.mp4", "frames_folder": "recapture_sample_depth/", "frame_count": 14,
                     "width": 1024, "height": 576}},
        {"id": 3, "type": "ReCaptureDepthToPointCloud", "col": 1,
         "widgets": {"depth_kind": "inverse", "near": "@near", "far": "@far", "fov_deg": 60.0}},
        {"id": 11, "type": "Preview3D", "col": 1, "title": "Point cloud of frame 0"},
        {"id": 4, "type": "ReCaptureCameraTrajectory", "col": 2,
         "widgets": {"preset": "orbit_left", "amount": 15.0, "easing": "ease_in_out"}},
        {"id": 5, "type": "ReCaptureRenderAnchor", "col": 2},
        {"id": 6, "type": "CreateVideo", "col": 3, "title": "Anchor video"},
        {"id": 7, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/anchor"}},
        {"id": 8, "type": "MaskToImage", "col": 4},
        {"id": 9, "type": "CreateVideo", "col": 4, "title": "Mask video"},
        {"id": 10, "type": "SaveVideo", "col": 4, "widgets": {"filename_prefix": "recapture/mask"}},
    ],
    "links": [
        (1, "frames", 3, "frames"), (2, "frames", 3, "depth"), (3, "point_cloud", 4, "point_cloud"),
        (3, "point_cloud", 5, "point_cloud"), (4, "camera_path", 5, "camera_path"),
        (5, "anchor", 6, "images"), (1, "fps", 6, "fps"), (6, "VIDEO", 7, "video"),
        (5, "mask", 8, "mask"), (8, "IMAGE", 9, "images"), (1, "fps", 9, "fps"), (9, "VIDEO", 10, "video"),
        (3, "preview_file", 11, "model_file"),
    ],
    "groups": [
        {"title": "1. Clip and its depth", "nodes": [1, 2]},
        {"title": "2. Point cloud", "nodes": [3, 11]},
        {"title": "3. New camera path and anchor", "nodes": [4, 5]},
        {"title": "4. Save anchor and mask videos (output/recapture/)", "nodes": [6, 7, 8, 9, 10]},
    ],
    "notes": [
        {"col": 2, "size": [400, 260], "text": (
            "ReCapture Stage 1: the anchor video.\n\n"
            "Each frame plus its depth becomes a point cloud in that frame's camera, and is rendered from "
            "the new camera. The anchor has holes where the new view sees what the source never saw; the "
            "mask is white where a point landed.\n\n"
            "This runs on the bundled sample (make demo writes recapture_sample.mp4 and its exact depth). "
            "For your own clip: replace 'Depth' with ReCapture Estimate Depth or any depth node "
            "(depth_kind inverse, bright = near), and set near/far to the scene's rough distances.")},
    ],
}


SVD_FILE = "svd_xt.safetensors"  # the single-file checkpoint ComfyUI users keep in models/checkpoints
SVD_CHOICE = f"checkpoints/{SVD_FILE}"

FULL = {
    "file": "recapture_full.json",
    "overview": "full_workflow.png",
    "nodes": ANCHOR_ONLY["nodes"][:6] + [
        {"id": 6, "type": "CreateVideo", "col": 3, "title": "Anchor video"},
        {"id": 7, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/anchor"}},
        {"id": 8, "type": "MaskToImage", "col": 3},
        {"id": 9, "type": "CreateVideo", "col": 3, "title": "Mask video"},
        {"id": 10, "type": "SaveVideo", "col": 3, "widgets": {"filename_prefix": "recapture/mask"}},
        {"id": 12, "type": "ReCaptureLoadSVD", "col": 4, "widgets": {"model": SVD_CHOICE, "dtype": "auto"}},
        {"id": 13, "type": "ReCaptureTrainMaskedLoRA", "col": 4,
         "widgets": {"steps": 400, "learning_rate": 5e-4, "rank": 16, "lora_name": "recapture"}},
        {"id": 14, "type": "ReCaptureSVDDualLoRASample", "col": 5, "widgets": {"steps": 25}},
        {"id": 15, "type": "ReCaptureSDEditRefine", "col": 5, "widgets": {"strength": 0.6, "steps": 25}},
        {"id": 16, "type": "CreateVideo", "col": 6, "title": "Re-filmed video"},
        {"id": 17, "type": "SaveVideo", "col": 6, "widgets": {"filename_prefix": "recapture/recaptured"}},
        {"id": 18, "type": "PreviewImage", "col": 6, "title": "Training loss"},
    ],
    "links": ANCHOR_ONLY["links"] + [
        (12, "svd", 13, "svd"), (5, "anchor", 13, "anchor"), (5, "mask", 13, "mask"), (1, "frames", 13, "source"),
        (12, "svd", 14, "svd"), (13, "lora", 14, "lora"), (5, "anchor", 14, "anchor"), (1, "frames", 14, "source"),
        (5, "mask", 14, "mask"),
        (12, "svd", 15, "svd"), (13, "lora", 15, "lora"), (14, "frames", 15, "frames"),
        (15, "refined", 16, "images"), (1, "fps", 16, "fps"), (16, "VIDEO", 17, "video"),
        (13, "loss_curve", 18, "images"),
    ],
    "groups": ANCHOR_ONLY["groups"][:3] + [
        {"title": "4. Save anchor, mask", "nodes": [6, 7, 8, 9, 10]},
        {"title": "5. Fine-tune SVD", "nodes": [12, 13]},
        {"title": "6. Sample, refine", "nodes": [14, 15]},
        {"title": "7. Save the video", "nodes": [16, 17, 18]},
    ],
    "pictures": {"5.": "stage2_train.png", "6.": "stage2_sample.png"},
    "notes": [
        {"col": 2, "size": [400, 300], "text": (
            "ReCapture: re-film a video along a new camera path.\n\n"
            "1-3: the anchor video (the scene's point cloud seen from the new camera) and its validity mask.\n"
            "5: SVD learns the anchor's motion (temporal LoRA, loss only where the mask is white) and the "
            "source's look (spatial LoRA); the LoRAs land in models/loras/recapture/.\n"
            "6: sampling with both LoRAs fills the holes; SDEdit with the spatial LoRA removes blur.\n\n"
            "Needs models/checkpoints/" + SVD_FILE + " (or pick a diffusers folder in Load SVD). "
            "For your own clip, replace 'Depth' with ReCapture Estimate Depth or any depth node.\n\n"
            "GPU with 12 GB or less: turn on low_memory in 5 and 6 (and decode_chunk_size 2), or use a "
            "smaller size in Source video and Depth.")},
    ],
}


def build(server: ComfyServer, spec: dict, values: dict, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(server.url)
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
        page.wait_for_timeout(1000)
        resolved = json.loads(json.dumps(spec), object_hook=lambda d: {
            k: (values[v[1:]] if isinstance(v, str) and v.startswith("@") else v) for k, v in d.items()})
        workflow = page.evaluate(BUILD_JS, resolved)
        for prefix, picture in spec.get("pictures", {}).items():
            group_picture(page, prefix, REPO / "web" / "docs" / picture)
        page.set_viewport_size({"width": 2800, "height": 1400})
        page.add_style_tag(content="[class*='minimap'] { display: none !important; }")
        page.wait_for_timeout(500)
        overview_picture(page, REPO / "docs" / "images" / spec["overview"])
        browser.close()
    out.write_text(json.dumps(workflow, indent=2) + "\n")
    print(f"wrote {out}")


def overview_picture(page, out: Path) -> None:
    """The whole graph just built, fitted into the canvas (the README's pictures)."""
    box = page.evaluate("""() => {
        const app = window.app, canvas = app.canvas, rect = canvas.canvas.getBoundingClientRect();
        canvas.deselectAll?.();  // no selection toolbox in the picture
        canvas.show_info = false;  // nor the FPS corner
        const top = 130, left = 70, right = 10, bottom = 40;  // clear of the top bar, side bar, canvas info
        const boxes = [...app.graph._nodes.map(n => [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]),
                       ...app.graph._groups.map(g => g._bounding)];
        const x0 = Math.min(...boxes.map(b => b[0])), y0 = Math.min(...boxes.map(b => b[1]));
        const x1 = Math.max(...boxes.map(b => b[0] + b[2])), y1 = Math.max(...boxes.map(b => b[1] + b[3]));
        const width = rect.width - left - right, height = rect.height - top - bottom;
        const scale = Math.min(width / (x1 - x0 + 40), height / (y1 - y0 + 40));
        canvas.ds.scale = scale;
        canvas.ds.offset = [(left + 20) / scale - x0, (top + 20) / scale - y0];
        canvas.setDirty(true, true);
        return {x: rect.left + left, y: rect.top + top, width: Math.ceil((x1 - x0 + 40) * scale),
                height: Math.ceil((y1 - y0 + 40) * scale)};
    }""")
    page.wait_for_timeout(800)
    page.screenshot(path=str(out), clip=box)
    print(f"wrote {out}")


def group_picture(page, title_prefix: str, out: Path) -> None:
    """A screenshot of one group of the graph just built (the help pages' pictures of Stage 2 nodes)."""
    box = page.evaluate("""(prefix) => {
        const canvas = window.app.canvas, group = window.app.graph._groups.find(g => g.title.startsWith(prefix));
        const [x, y, w, h] = group._bounding;
        canvas.ds.scale = 1;
        canvas.ds.offset = [160 - x, 160 - y];
        canvas.setDirty(true, true);
        const rect = canvas.canvas.getBoundingClientRect();
        return {x: rect.left + 150, y: rect.top + 150, width: w + 20, height: h + 20};
    }""", title_prefix)
    page.wait_for_timeout(800)
    page.screenshot(path=str(out), clip=box)
    print(f"wrote {out}")


BUILD_JS = """
async (spec) => {
  const app = window.app;
  const COL_WIDTH = 420, GAP = 60, TOP = 80, LEFT = 40;
  app.graph.clear();
  const byId = {}, columns = {};
  const place = (node, col) => {
    const y = columns[col] ?? TOP;
    node.pos = [LEFT + col * COL_WIDTH, y];
    columns[col] = y + node.size[1] + GAP + LiteGraph.NODE_TITLE_HEIGHT;
  };
  for (const n of spec.nodes) {
    const node = LiteGraph.createNode(n.type);
    if (!node) throw new Error('unknown node type ' + n.type);
    node.id = n.id;
    app.graph.add(node);
    if (n.title) node.title = n.title;
    for (const [name, value] of Object.entries(n.widgets || {})) {
      const w = node.widgets.find(w => w.name === name);
      if (!w) throw new Error(n.type + ' has no widget ' + name);
      w.value = value;
      w.callback?.(value, app.canvas, node);  // as a person's edit: e.g. the video upload shows its preview
    }
    // fixed seeds: re-queueing reuses the trained LoRAs from ComfyUI's cache instead of retraining
    const control = node.widgets?.find(w => w.name === 'control_after_generate');
    if (control) control.value = 'fixed';
    byId[n.id] = node;
  }
  // Previews (the video upload's player, our views) load asynchronously: size the nodes after them.
  await new Promise(resolve => setTimeout(resolve, 2500));
  for (const n of spec.nodes) {
    const node = byId[n.id];
    node.size = node.computeSize();
    node.size[0] = Math.max(node.size[0], COL_WIDTH - GAP);
    place(node, n.col);
  }
  for (const [src, out, dst, inp] of spec.links) {
    const s = byId[src], d = byId[dst];
    const o = s.outputs.findIndex(x => x.name === out || x.type === out);
    if (o < 0) throw new Error('no output ' + out + ' on ' + s.type);
    const i = d.inputs.findIndex(x => x.name === inp);
    if (i < 0) throw new Error('no input ' + inp + ' on ' + d.type);
    if (!s.connect(o, d, i)) throw new Error('cannot link ' + out + ' -> ' + inp);
  }
  for (const note of spec.notes || []) {
    const n = LiteGraph.createNode('Note');
    app.graph.add(n);
    n.size = note.size;
    n.widgets[0].value = note.text;
    place(n, note.col);
  }
  const PAD = 20, TITLE = 50;
  for (const g of spec.groups || []) {
    const members = g.nodes.map(id => byId[id]);
    const x0 = Math.min(...members.map(n => n.pos[0])) - PAD;
    const y0 = Math.min(...members.map(n => n.pos[1])) - LiteGraph.NODE_TITLE_HEIGHT - TITLE;
    const x1 = Math.max(...members.map(n => n.pos[0] + n.size[0])) + PAD;
    const y1 = Math.max(...members.map(n => n.pos[1] + n.size[1])) + PAD;
    const group = new LiteGraph.LGraphGroup(g.title);
    group.pos = [x0, y0];
    group.size = [x1 - x0, y1 - y0];
    app.graph.add(group);
  }
  app.canvas.ds.scale = 0.6;
  app.canvas.ds.offset = [130, 230];  // clear of the top bar and side bar at this scale
  app.graph.setDirtyCanvas(true, true);
  // As the canvas saves a file: through JSON, which drops undefined fields (null would fail its schema).
  return JSON.parse(JSON.stringify(app.graph.serialize()));
}
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(base=Path(tmp))
        (Path(tmp) / "models" / "checkpoints").mkdir(parents=True)
        files = write_demo_clip(Path(tmp) / "input")
        sample = json.loads(files[-1].read_text())
        values = {"near": round(sample["near"], 4), "far": round(sample["far"], 4)}
        # the full workflow's model combo lists files by name: a placeholder of that name will do
        save_file({"placeholder": torch.zeros(1)}, str(Path(tmp) / "models" / "checkpoints" / SVD_FILE))
        with server:
            for spec in (ANCHOR_ONLY, FULL):
                build(server, spec, values, REPO / "workflows" / spec["file"])


if __name__ == "__main__":
    main()
