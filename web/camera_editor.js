// The 3D camera-path editor on ReCapture Camera Trajectory nodes: a three.js view of the source camera,
// the new path's camera frustums and line, a frame scrubber, and after a run the first frame's point
// cloud. The path comes from the server (POST /recapture/camera_path), which decides as the node does
// whether custom_path, the camera file or the preset wins: nothing of that is re-implemented here.
//
// Loaded by recapture.js. ComfyUI also auto-loads this file as an extension; it has no side effects, and
// three.js (web/lib/three/*.mjs) is imported only when the first trajectory node appears.
// Everything here fails soft: an error is logged once with console.warn and the node keeps working.
import { api } from "../../scripts/api.js";
import { addNodeView, runAfter } from "./node_views.js";

export const NODE_TYPE = "ReCaptureCameraTrajectory";
const WIDGET_TYPE = "RECAPTURE_CAMERA_EDITOR"; // unique, so the Vue node renderer keeps it as a DOM widget
const WATCHED = ["preset", "amount", "easing", "frames", "pivot_distance", "camera_file", "custom_path"];
const DEBOUNCE_MS = 150;
const NO_FILE = "(none: use the preset)"; // the camera_file combo's first entry (nodes/anchor.py)
// The widgets a custom path or a camera file overrides (greyed out while it is active); a connected point
// cloud overrides frames. pivot_distance is kept: the editor draws the pivot with it.
const OVERRIDDEN = { custom: ["preset", "amount", "easing", "camera_file"], file: ["preset", "amount", "easing"] };
const OVERRIDABLE = ["preset", "amount", "easing", "camera_file", "frames"];
// Keeping the view on the path: the selected camera's centre stays within this part of the view (NDC),
// so its gizmo's arrows (about 0.2 of the view's height long) stay on screen too, and every camera within
// the second. A path change that breaks either moves the view back until both hold with some room.
const KEEP_SELECTED = 0.72, KEEP_PATH = 1.0, FIT_SELECTED = 0.6, FIT_PATH = 0.9;
const MIN_HEIGHT = 300;
const UNAVAILABLE = "3D view unavailable (see the browser console)";
// Browsers keep ~16 WebGL contexts and drop the oldest beyond that (many editors, other packs' 3D views).
const PAUSED = "3D view paused by the browser (too many 3D views open): click it to bring it back";
const COLORS = {
  background: 0x15181d,
  source: 0xf2f2f2, // the source camera: white
  pathStart: [0.25, 0.55, 1.0], // the new path: blue (first frame) to orange (last frame)
  pathEnd: [1.0, 0.55, 0.15],
  selected: 0x39ff6a, // the scrubbed frame: green
  line: 0xffd24a,
  pivot: 0xff4fd8,
};

let threeModules = null;
let warned = false;

/** Logs the first failure only: the editor is optional, the console should not fill up. */
function warnOnce(message, error) {
  if (warned) return;
  warned = true;
  console.warn(`[ReCapture] camera editor: ${message}`, error ?? "");
}

function loadThree() {
  threeModules ??= importThree();
  return threeModules;
}

/**
 * Our three.js, kept out of the page's global registry. The frontend bundles its own three.js privately
 * (minified exports, another version, no TransformControls), so it cannot be reused; it loads with the
 * page and sets ``window.__THREE__``, and every copy of three warns "Multiple instances of Three.js being
 * imported" when it finds that set. The frontend's value is hidden while ours evaluates, then put back, so
 * neither copy sees the other.
 */
async function importThree() {
  const registered = Object.prototype.hasOwnProperty.call(window, "__THREE__");
  const theirs = window.__THREE__;
  delete window.__THREE__;
  try {
    // Relative to this file: the pack's folder name depends on how it was installed.
    const [THREE, orbit, transform] = await Promise.all([import("./lib/three/three.module.mjs"),
      import("./lib/three/OrbitControls.mjs"), import("./lib/three/TransformControls.mjs")]);
    return { THREE, OrbitControls: orbit.OrbitControls, TransformControls: transform.TransformControls };
  } finally {
    if (registered) window.__THREE__ = theirs;
    else delete window.__THREE__;
  }
}

// OpenCV (x right, y down, z forward) -> three.js (x right, y up, z backward).
const toThree = (x, y, z) => [x, -y, -z];

function transform(pose, p) {
  return [0, 1, 2].map((r) => pose[r][0] * p[0] + pose[r][1] * p[1] + pose[r][2] * p[2] + pose[r][3]);
}

/** Line-segment vertices of a camera frustum (pyramid, image rectangle, an "up" tick) in three.js axes. */
function frustumVertices(pose, fovDeg, aspect, depth) {
  const w = depth * Math.tan((fovDeg * Math.PI) / 360);
  const h = w / aspect;
  const local = {
    apex: [0, 0, 0],
    tl: [-w, -h, depth], tr: [w, -h, depth], br: [w, h, depth], bl: [-w, h, depth],
    up: [0, -h * 1.4, depth],
  };
  const p = Object.fromEntries(Object.entries(local).map(([k, v]) => [k, toThree(...transform(pose, v))]));
  const edges = [["apex", "tl"], ["apex", "tr"], ["apex", "br"], ["apex", "bl"],
    ["tl", "tr"], ["tr", "br"], ["br", "bl"], ["bl", "tl"], ["tl", "up"], ["up", "tr"]];
  return edges.flatMap(([a, b]) => [...p[a], ...p[b]]);
}

const IDENTITY = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];

/**
 * A path with frame ``k`` moved by ``delta`` (OpenCV axes, scene units) as a keyframe: the frames around
 * it follow with a smooth falloff (half cosine) to the first and last frames, which stay where they are
 * unless ``k`` is one of them, so the move stays smooth. Rotations and fields of view are kept.
 */
export function moveKeyframe(path, k, delta) {
  const n = path.frames.length;
  const ease = (t) => 0.5 - 0.5 * Math.cos(Math.PI * t);
  const frames = path.frames.map((frame, i) => {
    const weight = i === k ? 1 : i < k ? ease(i / k) : ease((n - 1 - i) / (n - 1 - k));
    const pose = frame.pose.map((row) => row.slice());
    for (let r = 0; r < 3; r++) pose[r][3] += weight * delta[r];
    return { ...frame, pose };
  });
  return { ...path, frames };
}

function widgetOf(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

class CameraEditor {
  constructor(node) {
    this.node = node;
    this.path = null; // the camera file being shown
    this.pathSource = "none"; // which input the node will render: "preset" | "file" | "custom" | "none"
    this.pivot = null; // the subject's distance the server drew the path with (null: unknown)
    this.presetPath = null; // the last preset or camera-file path from the server (what "bake" writes)
    this.run = null; // ui data of the last run: pivot, source fov, aspect, points
    this.pointCount = 0;
    this.disabledWidgets = new Set(); // the widgets this editor greyed out (overridden), to give back
    this.selected = 0;
    this.renders = 0;
    this.status = "";
    this.requests = 0;
    this.lastKey = null;
    this.timer = null;
    this.disposed = false;
    this.element = this.buildDom();
    this.unavailable = false;
    this.ready = this.initThree().catch((e) => {
      this.unavailable = true;
      this.setStatus(UNAVAILABLE);
      warnOnce("could not start the 3D view", e);
    });
  }

  buildDom() {
    const root = document.createElement("div");
    root.className = "recapture-camera-editor";
    Object.assign(root.style, { display: "flex", flexDirection: "column", width: "100%", height: "100%",
      minHeight: `${MIN_HEIGHT}px`, background: "#15181d", borderRadius: "6px", overflow: "hidden",
      font: "11px sans-serif", color: "#ccc", boxSizing: "border-box" });
    this.viewport = document.createElement("div");
    Object.assign(this.viewport.style, { flex: "1 1 auto", position: "relative", minHeight: "120px" });
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, { position: "absolute", inset: "0", width: "100%", height: "100%",
      display: "block", outline: "none" });
    // What overrides the preset widgets (custom path, camera file), over the view where it cannot be missed.
    this.banner = document.createElement("div");
    Object.assign(this.banner.style, { position: "absolute", left: "6px", right: "6px", top: "6px", display: "none",
      padding: "3px 6px", borderRadius: "4px", background: "rgba(255, 210, 74, 0.92)", color: "#15181d",
      fontWeight: "bold", pointerEvents: "none", overflowWrap: "anywhere" });
    this.viewport.append(this.canvas, this.banner);

    const bar = document.createElement("div");
    Object.assign(bar.style, { display: "flex", alignItems: "center", gap: "6px", padding: "4px 6px" });
    this.scrubber = document.createElement("input");
    this.scrubber.type = "range";
    this.scrubber.min = "0";
    this.scrubber.max = "0";
    this.scrubber.value = "0";
    this.scrubber.title = "Frame to highlight (green); drag its gizmo in the view to move that camera";
    this.scrubber.style.flex = "1 1 auto";
    this.scrubber.addEventListener("input", () => this.select(Number(this.scrubber.value)));
    this.frameLabel = document.createElement("span");
    this.frameLabel.style.minWidth = "64px";
    const button = (text, title, onClick) => {
      const b = document.createElement("button");
      b.textContent = text;
      b.title = title;
      Object.assign(b.style, { font: "inherit", padding: "1px 6px", cursor: "pointer" });
      b.addEventListener("click", (e) => { e.stopPropagation(); this.guard(onClick); });
      bar.append(b);
      return b;
    };
    bar.append(this.scrubber, this.frameLabel);
    this.bakeButton = button("Bake", "Copy the preset (or camera file) path into custom_path, to keep it or edit it",
      () => this.bakePreset());
    this.clearButton = button("Clear", "Empty custom_path: the camera file or the preset is used again", () => this.setCustomPath(""));
    this.statusLine = document.createElement("div");
    // width 0 / min-width 100%: a long caption wraps instead of widening the node; two lines are kept for
    // it, so the view does not change size with the caption
    Object.assign(this.statusLine.style, { padding: "0 6px 4px", whiteSpace: "normal", overflowWrap: "anywhere",
      lineHeight: "1.3", minHeight: "calc(2.6em + 4px)", flex: "0 0 auto", width: "0", minWidth: "100%",
      boxSizing: "border-box" });
    // Keep typing and wheel events in the editor, not in the graph canvas (e.g. Delete removing the node).
    for (const type of ["keydown", "wheel"]) root.addEventListener(type, (e) => e.stopPropagation());
    root.append(this.viewport, bar, this.statusLine);
    return root;
  }

  async initThree() {
    const { THREE, OrbitControls, TransformControls } = await loadThree();
    if (this.disposed) return;
    this.THREE = THREE;
    this.renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    // three keeps the scene and re-uploads it when the context comes back; until then say why it is blank.
    // A lost context hands out no extensions: take the one that restores it now.
    this.contextControl = this.renderer.getContext().getExtension("WEBGL_lose_context");
    this.canvas.addEventListener("webglcontextlost", () => this.guard(() => {
      this.contextLost = true;
      this.setStatus(this.status ?? "");
    }));
    this.canvas.addEventListener("webglcontextrestored", () => this.guard(() => {
      this.contextLost = false;
      this.setStatus(this.status.replace(`; ${PAUSED}`, "").replace(PAUSED, ""));
      this.render();
    }));
    this.viewport.addEventListener("pointerdown", () => {
      if (this.contextLost && !this.disposed) this.guard(() => this.contextControl?.restoreContext());
    }, true);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(COLORS.background);
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.01, 10_000);
    this.controls = new OrbitControls(this.camera, this.canvas);
    this.controls.addEventListener("change", () => this.render());
    this.group = new THREE.Group(); // path, frustums, pivot: rebuilt on every path change
    this.scene.add(this.group);
    // The keyframe gizmo: drag the highlighted camera; on release the edited path goes into custom_path.
    this.gizmoTarget = new THREE.Object3D();
    this.scene.add(this.gizmoTarget);
    this.gizmo = new TransformControls(this.camera, this.canvas);
    this.gizmo.setSize(0.8);
    this.gizmo.attach(this.gizmoTarget);
    this.scene.add(this.gizmo.getHelper());
    this.gizmo.addEventListener("change", () => this.render());
    this.gizmo.addEventListener("dragging-changed", (e) => this.guard(() => {
      this.controls.enabled = !e.value; // the gizmo's drag must not also orbit the view
      if (e.value) this.dragStart();
      else this.dragEnd();
    }));
    this.gizmo.addEventListener("objectChange", () => this.guard(() => this.dragMove()));
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.viewport);
    this.viewScale = null;
    this.rebuild();
  }

  /** Runs a handler; any error becomes a status line and one console warning, never an exception. */
  guard(fn) {
    try {
      const result = fn();
      if (result?.catch) result.catch((e) => this.fail(e));
    } catch (e) {
      this.fail(e);
    }
  }

  fail(e) {
    this.setStatus(`editor error: ${e?.message ?? e}`);
    warnOnce("an update failed", e);
  }

  setStatus(text) {
    if (this.unavailable && text !== UNAVAILABLE) text = `${text}; ${UNAVAILABLE}`;
    if (this.contextLost && !text.includes(PAUSED)) text = text ? `${text}; ${PAUSED}` : PAUSED;
    this.status = text;
    this.statusLine.textContent = text;
    this.statusLine.title = text;
  }

  // --- inputs ---------------------------------------------------------------------------------------
  values() {
    return Object.fromEntries(WATCHED.map((name) => [name, widgetOf(this.node, name)?.value]));
  }

  /** Called on widget callbacks and on every node draw: reloads the path when an input changed. */
  check() {
    const key = JSON.stringify([this.values(), this.run?.pivot_distance, this.pointCloudLinked()]);
    if (key === this.lastKey) return;
    this.lastKey = key;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.guard(() => this.reload()), DEBOUNCE_MS);
  }

  pointCloudLinked() {
    return this.node.inputs?.find((i) => i.name === "point_cloud")?.link != null;
  }

  async reload() {
    const v = this.values();
    const id = ++this.requests;
    // Values outside a widget's own range (set by a script) are reported here: the server would refuse
    // them with HTTP 400, which the browser logs as a console error.
    for (const name of ["amount", "frames", "pivot_distance"]) {
      const { min, max } = widgetOf(this.node, name)?.options ?? {};
      const value = v[name];
      if (typeof value !== "number" || !Number.isFinite(value) || value < (min ?? -Infinity) || value > (max ?? Infinity)) {
        this.show(null, "none", `${name} must be between ${min} and ${max}, got ${value}`);
        return;
      }
    }
    // With a point cloud connected the node takes the clip's frame count: the last run knows it.
    const frames = this.pointCloudLinked() && this.run ? this.run.path.frames.length : v.frames;
    // Every value the node's choice depends on: the server picks custom path, camera file or preset.
    // An automatic pivot is drawn with the last run's (its depth's) until the node runs again.
    const body = { preset: v.preset, amount: v.amount, easing: v.easing, frames, pivot_distance: v.pivot_distance,
      camera_file: v.camera_file ?? null, custom_path: v.custom_path ?? "", fov_deg: this.run?.source_fov_deg ?? null,
      stand_in_pivot: this.run?.points ? this.run.pivot_distance ?? null : null,
      point_cloud: this.pointCloudLinked() }; // the caption says where an automatic pivot will come from
    const response = await api.fetchApi("/recapture/camera_path", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (id !== this.requests || this.disposed) return; // a newer change is on its way
    if (!response.ok) {
      this.show(null, "none", data.error ?? `HTTP ${response.status}`);
      return;
    }
    if (data.source !== "custom") this.presetPath = data.path;
    this.sourceFov = data.source_fov_deg; // the server's (the last run's, or the library's default)
    this.show(data.path, data.source, data.description, data.pivot_distance);
  }

  show(path, source, status, pivot = null) {
    this.path = path;
    this.pathSource = source;
    this.pivot = pivot;
    this.setStatus(status);
    // A custom path or camera file overrides the preset widgets: the caption says so, in the path's colour,
    // a banner over the view says how to get the preset back, and the overridden widgets are greyed out.
    this.statusLine.style.color = source === "custom" || source === "file" ? "#ffd24a" : "";
    if (source !== "none") this.markOverrides(source);
    const n = path?.frames.length ?? 1;
    this.scrubber.max = String(Math.max(0, n - 1));
    this.selected = Math.min(this.selected, n - 1);
    this.scrubber.value = String(this.selected);
    this.rebuild();
  }

  /** Greys out (``widget.disabled``, as the frontend does for a widget fed by a link) the widgets the
   * winning input overrides, says so over the view, and gives back the ones no longer overridden. */
  markOverrides(source) {
    const overridden = new Set(OVERRIDDEN[source] ?? []);
    if (this.pointCloudLinked()) overridden.add("frames"); // the clip's frame count wins
    for (const name of OVERRIDABLE) {
      const w = widgetOf(this.node, name);
      if (!w) continue;
      if (overridden.has(name) && !w.disabled) {
        w.disabled = true;
        this.disabledWidgets.add(name);
      } else if (!overridden.has(name) && this.disabledWidgets.delete(name)) {
        w.disabled = false;
      }
    }
    const file = widgetOf(this.node, "camera_file")?.value;
    const text = source === "custom"
      ? `custom path active - Clear to use the ${file && file !== NO_FILE ? "camera file" : "preset"}`
      : source === "file" ? `camera file ${file} active - set camera_file to "${NO_FILE}" to use the preset` : "";
    this.banner.textContent = text;
    this.banner.style.display = text ? "block" : "none";
    this.node.setDirtyCanvas?.(true, false);
  }

  select(frame) {
    this.selected = frame;
    this.rebuild();
  }

  setCustomPath(text) {
    const widget = widgetOf(this.node, "custom_path");
    if (!widget) return;
    widget.value = text;
    widget.callback?.(text);
    this.node.setDirtyCanvas?.(true, true);
    this.check();
  }

  dragStart() {
    if (!this.path) return;
    this.drag = { base: this.path, frame: this.selected, origin: this.gizmoTarget.position.clone(), moved: false };
  }

  dragMove() {
    if (!this.drag) return;
    const d = this.gizmoTarget.position.clone().sub(this.drag.origin);
    this.drag.moved = d.lengthSq() > 0;
    this.path = moveKeyframe(this.drag.base, this.drag.frame, toThree(d.x, d.y, d.z)); // the flip is its own inverse
    this.rebuild();
  }

  dragEnd() {
    const drag = this.drag;
    this.drag = null;
    if (drag?.moved) this.setCustomPath(JSON.stringify(this.path));
  }

  bakePreset() {
    if (!this.presetPath) throw new Error("no preset path to bake yet");
    this.setCustomPath(JSON.stringify(this.presetPath));
  }

  // --- after a run ----------------------------------------------------------------------------------
  async onExecuted(output) {
    const data = output?.recapture_camera?.[0];
    if (!data) return;
    this.run = data;
    this.lastKey = null; // the pivot and frame count may have changed
    this.check();
    await this.ready;
    if (!this.THREE || !data.points) return;
    const { filename, subfolder, type, count } = data.points;
    const params = new URLSearchParams({ filename, subfolder, type });
    const response = await api.fetchApi(`/view?${params}`);
    if (!response.ok) throw new Error(`could not fetch the point cloud (HTTP ${response.status})`);
    const buffer = await response.arrayBuffer();
    if (buffer.byteLength !== count * 15) throw new Error("the point cloud file has an unexpected size");
    this.setPoints(new Float32Array(buffer, 0, count * 3), new Uint8Array(buffer, count * 12, count * 3));
  }

  setPoints(xyz, rgb) {
    const THREE = this.THREE;
    const positions = new Float32Array(xyz.length);
    for (let i = 0; i < xyz.length; i += 3) positions.set(toThree(xyz[i], xyz[i + 1], xyz[i + 2]), i);
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(positions, 3));
    geometry.setAttribute("color", new THREE.BufferAttribute(new Uint8Array(rgb), 3, true));
    if (this.points) {
      this.scene.remove(this.points);
      this.points.geometry.dispose();
    }
    this.points = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 2, sizeAttenuation: false,
      vertexColors: true }));
    this.scene.add(this.points);
    this.pointCount = xyz.length / 3;
    this.render();
  }

  // --- drawing --------------------------------------------------------------------------------------
  /** The scene's size: the pivot distance, else the path's extent. Sets frustum size and view. */
  scale() {
    const pivot = this.pivot ?? widgetOf(this.node, "pivot_distance")?.value;
    if (pivot > 0) return pivot;
    if (this.run?.pivot_distance > 0) return this.run.pivot_distance;
    const extent = Math.max(0, ...(this.path?.frames ?? []).map((f) => Math.hypot(f.pose[0][3], f.pose[1][3], f.pose[2][3])));
    return extent > 0 ? extent : 1.0;
  }

  rebuild() {
    if (!this.THREE || this.disposed) return;
    const THREE = this.THREE;
    for (const child of [...this.group.children]) {
      this.group.remove(child);
      child.geometry?.dispose();
      child.material?.dispose();
    }
    const s = this.scale();
    const fov = this.run?.source_fov_deg ?? this.sourceFov ?? 60.0; // 60: only until the server first answers
    const aspect = this.run?.aspect ?? 16 / 9;
    const depth = 0.15 * s;
    const lines = (vertices, colors, material) => {
      const g = new THREE.BufferGeometry();
      g.setAttribute("position", new THREE.Float32BufferAttribute(vertices, 3));
      if (colors) g.setAttribute("color", new THREE.Float32BufferAttribute(colors, 3));
      this.group.add(new THREE.LineSegments(g, material));
    };
    // the source camera, a bit larger so it shows around the path's first camera
    lines(frustumVertices(IDENTITY, fov, aspect, depth * 1.25), null,
      new THREE.LineBasicMaterial({ color: COLORS.source }));
    const frames = this.path?.frames ?? [];
    if (frames.length) {
      const vertices = [], colors = [];
      frames.forEach((f, i) => {
        const v = frustumVertices(f.pose, f.fov_deg ?? fov, aspect, depth);
        const t = frames.length > 1 ? i / (frames.length - 1) : 1;
        const c = COLORS.pathStart.map((a, k) => a + (COLORS.pathEnd[k] - a) * t);
        vertices.push(...v);
        for (let k = 0; k < v.length / 3; k++) colors.push(...c);
      });
      lines(vertices, colors, new THREE.LineBasicMaterial({ vertexColors: true }));
      const f = frames[Math.min(this.selected, frames.length - 1)];
      lines(frustumVertices(f.pose, f.fov_deg ?? fov, aspect, depth * 1.1), null,
        new THREE.LineBasicMaterial({ color: COLORS.selected }));
      const centres = frames.map((fr) => toThree(fr.pose[0][3], fr.pose[1][3], fr.pose[2][3]));
      const g = new THREE.BufferGeometry().setFromPoints(centres.map((c) => new THREE.Vector3(...c)));
      this.group.add(new THREE.Line(g, new THREE.LineBasicMaterial({ color: COLORS.line })));
      if (!this.drag) this.gizmoTarget.position.set(...centres[Math.min(this.selected, frames.length - 1)]);
    }
    this.gizmo.enabled = this.gizmo.getHelper().visible = frames.length > 0;
    const p = 0.05 * s, z = -s; // the pivot (0, 0, s) in OpenCV
    lines([-p, 0, z, p, 0, z, 0, -p, z, 0, p, z, 0, 0, z - p, 0, 0, z + p], null,
      new THREE.LineBasicMaterial({ color: COLORS.pivot }));
    this.frameLabel.textContent = frames.length ? `frame ${this.selected + 1}/${frames.length}` : "";
    if (this.viewScale === null || s / this.viewScale > 2 || this.viewScale / s > 2) this.frame(s);
    this.keepInView();
    this.render();
  }

  /** The points the view must keep: the selected camera's centre, and the path's cameras, the source
   * camera and the pivot (three.js axes); null without a path. */
  keptPoints() {
    const frames = this.path?.frames;
    if (!frames?.length) return null;
    const V = this.THREE.Vector3;
    const centres = frames.map((f) => new V(...toThree(f.pose[0][3], f.pose[1][3], f.pose[2][3])));
    const selected = this.drag ? this.gizmoTarget.position.clone() : centres[Math.min(this.selected, frames.length - 1)];
    return { selected, all: [...centres, new V(0, 0, 0), new V(0, 0, -this.scale())] };
  }

  /** Whether the view shows ``selected`` within ``keepSelected`` and every point of ``all`` within
   * ``keepAll`` of the view (normalised device coordinates, 1 = the edge), all in front of the camera. */
  shows({ selected, all }, keepSelected, keepAll) {
    this.camera.updateMatrixWorld();
    const v = new this.THREE.Vector3();
    const inside = (p, m) => {
      v.copy(p).project(this.camera);
      return Math.abs(v.x) <= m && Math.abs(v.y) <= m && v.z > -1 && v.z < 1;
    };
    return inside(selected, keepSelected) && all.every((p) => inside(p, keepAll));
  }

  /** Re-frames the view when the path or the selected frame left it: same viewing direction, looking at
   * the middle of what must show, from the nearest distance where the selected camera with its gizmo and
   * the whole path fit. Views the user set that still show them are left alone; never while dragging. */
  keepInView() {
    if (this.drag || !this.syncSize()) return;
    const kept = this.keptPoints();
    if (!kept || this.shows(kept, KEEP_SELECTED, KEEP_PATH)) return;
    const THREE = this.THREE;
    const box = new THREE.Box3().setFromPoints([kept.selected, ...kept.all]);
    const target = box.getCenter(new THREE.Vector3());
    const direction = this.camera.position.clone().sub(this.controls.target).normalize();
    const place = (d) => this.camera.position.copy(target).addScaledVector(direction, d);
    const fits = (d) => {
      place(d);
      this.camera.lookAt(target);
      return this.shows(kept, FIT_SELECTED, FIT_PATH);
    };
    this.controls.target.copy(target);
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-6);
    this.camera.near = radius * 1e-3; // nothing kept is clipped while searching
    this.camera.far = radius * 1e4;
    this.camera.updateProjectionMatrix();
    let far = radius;
    for (let i = 0; i < 60 && !fits(far); i++) far *= 2;
    let near = 0;
    for (let i = 0; i < 40; i++) {
      const mid = (near + far) / 2;
      if (fits(mid)) far = mid;
      else near = mid;
    }
    place(far);
    this.camera.near = Math.min(0.01 * this.scale(), far * 0.01);
    this.camera.far = Math.max(1000 * this.scale(), (far + radius) * 10);
    this.camera.updateProjectionMatrix();
    this.controls.update();
  }

  /** For tests and debugging: the cameras as drawn (the path line's vertices, back in OpenCV axes), the
   * selected frame, and where its centre and the gizmo are on the view (normalised device coordinates). */
  drawnCameras() {
    const line = this.group?.children.find((c) => c.type === "Line");
    const xyz = line ? Array.from(line.geometry.getAttribute("position").array) : [];
    const centres = [];
    for (let i = 0; i < xyz.length; i += 3) centres.push(toThree(xyz[i], xyz[i + 1], xyz[i + 2]));
    this.camera?.updateMatrixWorld();
    const ndc = (p) => (p ? p.clone().project(this.camera).toArray().slice(0, 2) : null);
    const selected = line ? new this.THREE.Vector3(...toThree(...centres[Math.min(this.selected, centres.length - 1)])) : null;
    const V = this.THREE?.Vector3;
    return { centres, selected: this.selected, selectedNdc: ndc(selected),
      centresNdc: V ? centres.map((c) => ndc(new V(...toThree(...c)))) : [],
      gizmoNdc: this.gizmo?.getHelper().visible ? ndc(this.gizmoTarget.position) : null,
      banner: this.banner.style.display === "none" ? "" : this.banner.textContent };
  }

  /** Puts the view behind, above and to the right of the source camera, looking at the subject. */
  frame(s) {
    this.viewScale = s;
    this.camera.near = 0.01 * s;
    this.camera.far = 1000 * s;
    this.camera.position.set(0.75 * s, 0.55 * s, 0.55 * s);
    this.controls.target.set(0, 0, -0.45 * s);
    this.camera.updateProjectionMatrix();
    this.controls.update();
  }

  /** Sizes the drawing to the view; false while it is collapsed or hidden. */
  syncSize() {
    const width = this.viewport.clientWidth, height = this.viewport.clientHeight;
    if (width < 2 || height < 2) {
      this.pendingFit = true; // keep the path in view once the view has a size
      return false;
    }
    const size = this.renderer.getSize(new this.THREE.Vector2());
    if (size.x !== width || size.y !== height) {
      this.renderer.setSize(width, height, false);
      this.camera.aspect = width / height;
      this.camera.updateProjectionMatrix();
    }
    return true;
  }

  render() {
    if (!this.renderer || this.disposed || this.contextLost) return;
    if (!this.syncSize()) return;
    if (this.pendingFit) {
      this.pendingFit = false;
      this.keepInView();
    }
    this.renderer.render(this.scene, this.camera);
    this.renders++;
  }

  dispose() {
    if (this.disposed) return; // a workflow switch can remove a node more than once
    this.disposed = true;
    clearTimeout(this.timer);
    this.resizeObserver?.disconnect();
    this.gizmo?.dispose();
    this.controls?.dispose();
    // Browsers allow ~16 WebGL contexts: give this one back now, unless the browser already took it
    // (losing a lost context logs "loseContext: context already lost").
    const lost = this.contextLost || this.renderer?.getContext().isContextLost();
    this.renderer?.dispose();
    if (this.renderer && !lost) this.renderer.forceContextLoss();
  }
}

/** Adds the editor to a Camera Trajectory node. Never throws: the node works without it. */
export function attachCameraEditor(node) {
  try {
    const editor = new CameraEditor(node);
    addNodeView(node, "camera_editor", WIDGET_TYPE, editor.element, MIN_HEIGHT);
    node.recaptureEditor = editor; // for tests and debugging
    for (const name of WATCHED) {
      const w = widgetOf(node, name);
      if (!w) continue;
      runAfter(w, "callback", (f) => editor.guard(f), () => editor.check());
    }
    const chain = (method, fn) => runAfter(node, method, (f) => editor.guard(f), fn);
    // Values set without a callback (loading a workflow, undo, scripts) are caught on the next draw.
    chain("onDrawForeground", () => editor.check());
    chain("onConfigure", () => editor.check());
    chain("onConnectionsChange", () => editor.check());
    chain("onExecuted", (output) => editor.onExecuted(output));
    chain("onRemoved", () => editor.dispose());
    node.setSize([Math.max(node.size[0], 420), Math.max(node.size[1], node.computeSize()[1])]);
    editor.check();
  } catch (e) {
    warnOnce("could not add the editor to the node", e);
  }
}
