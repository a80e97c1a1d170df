// The video player in ReCapture nodes that make frames: after a run it plays them in the node. On
// Render Anchor a toggle paints the holes (validity mask = 0), so a person sees at a glance what SVD
// must invent. Fails soft: if anything here breaks, the node still renders, saves and runs.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { addNodeView, runAfter } from "./node_views.js";

// node type -> the label of its overlay toggle (null: no overlay)
export const PLAYER_NODES = {
  ReCaptureRenderAnchor: "mask overlay",
  ReCaptureSVDDualLoRASample: null,
  ReCaptureSDEditRefine: null,
};
const WIDGET_TYPE = "RECAPTURE_VIDEO_PLAYER";
const FPS = 8;
const MIN_HEIGHT = 200;
const PROGRESS_TEXT_WIDGET = "$$node-text-preview"; // the frontend's status line under a running node
let warned = false;
let watchingProgress = false;

function warnOnce(message, error) {
  if (warned) return;
  warned = true;
  console.warn(`[ReCapture] video player: ${message}`, error);
}

function viewUrl(file) {
  const params = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type });
  return api.apiURL(`/view?${params}`);
}

export class VideoPlayer {
  constructor(node, overlayLabel) {
    this.node = node;
    this.frames = [];
    this.overlay = [];
    this.index = 0;
    this.timer = null;
    node.properties ??= {};
    if (overlayLabel) node.properties.recapture_mask_overlay ??= false; // saved with the workflow

    this.element = document.createElement("div");
    Object.assign(this.element.style, { display: "flex", flexDirection: "column", gap: "4px", width: "100%",
                                        height: "100%", boxSizing: "border-box", padding: "2px", font: "12px sans-serif",
                                        color: "#ccc" });
    this.image = document.createElement("img");
    Object.assign(this.image.style, { flex: "1 1 auto", minHeight: "0", width: "100%", objectFit: "contain",
                                      background: "#15181d", borderRadius: "4px" });
    this.image.alt = "frames";
    this.image.style.visibility = "hidden"; // no broken-image icon before the first run
    // One line at any node width: the slider gives way (it has no minimum of its own), the toggle never
    // wraps, and the label wraps only a long message, never a short "frame 3/14".
    const bar = document.createElement("div");
    Object.assign(bar.style, { display: "flex", alignItems: "center", gap: "6px", minWidth: "0" });
    this.play = document.createElement("button");
    this.play.textContent = "▶";
    this.play.title = "play / pause";
    this.play.style.flex = "0 0 auto";
    this.slider = document.createElement("input");
    Object.assign(this.slider, { type: "range", min: 0, max: 0, value: 0 });
    Object.assign(this.slider.style, { flex: "1 1 0", width: "0", minWidth: "24px", margin: "0" });
    this.label = document.createElement("span");
    Object.assign(this.label.style, { flex: "0 1 auto", minWidth: "0", fontVariantNumeric: "tabular-nums" });
    this.label.textContent = "run the graph to play the frames";
    const toggle = document.createElement("label");
    toggle.title = "paint the holes (where the validity mask is 0)";
    Object.assign(toggle.style, { flex: "0 0 auto", display: "inline-flex", alignItems: "center", gap: "4px",
                                  whiteSpace: "nowrap", cursor: "pointer" });
    this.checkbox = document.createElement("input");
    this.checkbox.type = "checkbox";
    this.checkbox.style.margin = "0";
    this.checkbox.checked = !!node.properties.recapture_mask_overlay;
    toggle.append(this.checkbox, `${overlayLabel}`);
    this.toggle = toggle;
    bar.append(this.play, this.slider, this.label);
    if (overlayLabel) bar.append(toggle);
    this.element.append(this.image, bar);

    // the canvas must not take these clicks as node drags
    for (const el of [this.play, this.slider, toggle]) el.addEventListener("pointerdown", (e) => e.stopPropagation());
    this.play.addEventListener("click", () => this.guard(() => (this.timer ? this.pause() : this.start())));
    this.slider.addEventListener("input", () => this.guard(() => { this.pause(); this.show(Number(this.slider.value)); }));
    this.checkbox.addEventListener("change", () => this.guard(() => {
      node.properties.recapture_mask_overlay = this.checkbox.checked; // saved with the workflow
      this.show(this.index);
    }));
  }

  guard(fn) {
    try {
      return fn();
    } catch (e) {
      warnOnce("a player action failed", e);
    }
  }

  get showing() {
    return this.checkbox.checked && this.overlay.length ? this.overlay : this.frames;
  }

  onExecuted(output) {
    const data = output?.recapture_player?.[0];
    if (!data) return;
    this.frames = data.frames.map(viewUrl);
    this.overlay = (data.overlay ?? []).map(viewUrl);
    for (const url of [...this.frames, ...this.overlay]) new Image().src = url; // preload: smooth playback
    this.slider.max = Math.max(0, this.frames.length - 1);
    this.label.style.display = "";
    this.show(0);
    this.start();
  }

  /** While its node runs, the node's progress text is the frame label: the player's own is hidden. */
  running() {
    this.label.style.display = "none";
  }

  show(index) {
    const urls = this.showing;
    if (!urls.length) return;
    this.index = ((index % urls.length) + urls.length) % urls.length;
    this.image.src = urls[this.index];
    this.image.style.visibility = "visible";
    this.slider.value = this.index;
    this.label.textContent = `frame ${this.index + 1}/${urls.length}`;
  }

  start() {
    this.pause();
    this.play.textContent = "❚❚";
    this.timer = setInterval(() => this.guard(() => this.show(this.index + 1)), 1000 / FPS);
  }

  pause() {
    clearInterval(this.timer);
    this.timer = null;
    this.play.textContent = "▶";
  }
}

/** Removes the frontend's progress text from ``node`` as the frontend's own removeTextPreview does (the
 * next run's first progress message brings it back). */
function removeProgressText(node) {
  const index = node.widgets?.findIndex((w) => w.name === PROGRESS_TEXT_WIDGET) ?? -1;
  if (index < 0) return;
  node.widgets[index].onRemove?.();
  node.widgets.splice(index, 1);
  node.setDirtyCanvas?.(true, true);
}

/** Progress text for a node with a player: that node runs (one listener for all players). */
function watchProgress() {
  if (watchingProgress) return;
  watchingProgress = true;
  api.addEventListener("progress_text", ({ detail }) => {
    const player = app.graph?.getNodeById?.(detail?.nodeId)?.recapturePlayer;
    player?.guard(() => player.running());
  });
}

/** Adds the player to a node of PLAYER_NODES. Never throws: the node works without it. */
export function attachVideoPlayer(node) {
  try {
    watchProgress();
    const player = new VideoPlayer(node, PLAYER_NODES[node.comfyClass]);
    addNodeView(node, "video_player", WIDGET_TYPE, player.element, MIN_HEIGHT);
    node.recapturePlayer = player; // for tests and debugging
    const chain = (method, fn) => runAfter(node, method, (f) => player.guard(f), fn);
    chain("onExecuted", (output) => {
      player.onExecuted(output);
      // the frames play: the progress text's last "frame 14/14" would be a second, stale frame label
      if (player.frames.length) removeProgressText(node);
    });
    chain("onConfigure", () => { player.checkbox.checked = !!node.properties?.recapture_mask_overlay; });
    chain("onRemoved", () => player.pause());
    node.setSize([Math.max(node.size[0], 360), Math.max(node.size[1], node.computeSize()[1])]);
  } catch (e) {
    warnOnce("could not add the player to the node", e);
  }
}
