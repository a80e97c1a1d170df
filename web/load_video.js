// ReCapture Load Video's preview follows what the node will read:
// - a core VIDEO connected to video_input overrides the file widgets: video, frames_folder and the upload
//   button are greyed out (visually disabled, not clickable) and the file's preview is hidden;
// - a frames folder is read instead of the video: its frames play in the node (the pack's player), not
//   the video named in the idle video widget;
// - otherwise the core's preview of the video file shows, and a file this browser cannot play (a failed
//   upload, a codec it lacks) leaves a line saying so, never the previous file's preview.
// Fails soft: if anything here breaks, the node still loads, saves and runs.
import { api } from "../../scripts/api.js";
import { addNodeView, runAfter } from "./node_views.js";
import { VideoPlayer } from "./video_player.js";

export const NODE_TYPE = "ReCaptureLoadVideo";
export const NO_FOLDER = "(none: use the video)"; // nodes/video.py's NO_FOLDER
const FILE_WIDGETS = ["video", "frames_folder", "upload"]; // "upload": the core's upload button
const CORE_PREVIEW = "video-preview"; // the core's preview of the video widget's file
const VIEW_TYPE = "RECAPTURE_LOAD_VIDEO_PREVIEW";
const FRAMES_HEIGHT = 200;
const MESSAGE_HEIGHT = 36;
let warned = false;

function warnOnce(message, error) {
  if (warned) return;
  warned = true;
  console.warn(`[ReCapture] Load Video preview: ${message}`, error);
}

/** A value of the video widget ("clip.mp4", "sub/clip.mp4", maybe annotated " [input]") -> its /view URL. */
function inputFileUrl(value) {
  const name = String(value).replace(/ \[input\]$/, "");
  const slash = name.lastIndexOf("/");
  const params = new URLSearchParams({ filename: name.slice(slash + 1), subfolder: slash < 0 ? "" : name.slice(0, slash),
                                       type: "input" });
  return api.apiURL(`/view?${params}`);
}

class LoadVideoPreview {
  constructor(node) {
    this.node = node;
    this.player = new VideoPlayer(node, null);
    this.player.label.textContent = "";
    this.mode = "none"; // "frames" (a folder's frames play), "message" (one line), "none" (hidden)
    this.view = addNodeView(node, "frames_preview", VIEW_TYPE, this.player.element, FRAMES_HEIGHT);
    this.view.options.getMinHeight = () => (this.mode === "frames" ? FRAMES_HEIGHT : MESSAGE_HEIGHT);
    this.view.hidden = true;
    this.folder = null; // the folder whose frames the player holds
    this.request = 0; // the latest folder listing asked for: older answers are dropped
    this.probed = null; // the video file last tried in this browser
    this.unplayable = null; // ...and the one it could not play
  }

  guard(fn) {
    try {
      return fn();
    } catch (e) {
      warnOnce("an update failed", e);
    }
  }

  widget(name) {
    return this.node.widgets?.find((w) => w.name === name);
  }

  get linked() {
    return this.node.inputs?.find((i) => i.name === "video_input")?.link != null;
  }

  get folderValue() {
    return this.widget("frames_folder")?.value ?? NO_FOLDER;
  }

  get videoValue() {
    return this.widget("video")?.value ?? "";
  }

  /** What the node will read -> which file widgets are enabled and which preview shows. */
  update() {
    const linked = this.linked;
    for (const name of FILE_WIDGETS) {
      const w = this.widget(name);
      if (w) w.disabled = linked;
    }
    const folder = !linked && this.folderValue !== NO_FOLDER ? this.folderValue : null;
    const video = linked || folder ? null : this.videoValue;
    if (video && video !== this.probed) this.probe(video);
    const unplayable = video && video === this.unplayable;
    this.showCorePreview(!!video && !unplayable);
    if (linked) this.message("reads the connected video_input (it overrides video and frames_folder)");
    else if (folder) this.showFolder(folder);
    else if (unplayable) this.message(`no preview: this browser cannot play ${video} (the node checks it when it runs)`);
    else this.setMode("none");
    this.node.setDirtyCanvas?.(true, true);
  }

  showCorePreview(show) {
    const w = this.widget(CORE_PREVIEW);
    if (!w) return;
    w.hidden = !show;
    if (w.element) w.element.style.display = show ? "" : "none";
  }

  setMode(mode) {
    this.mode = mode;
    this.view.hidden = mode === "none";
    this.player.element.style.display = mode === "none" ? "none" : "flex";
    const frames = mode === "frames";
    for (const el of [this.player.play, this.player.slider]) el.style.display = frames ? "" : "none";
    this.player.image.style.display = frames ? "" : "none";
    if (!frames) this.player.pause();
    const height = this.node.computeSize()[1]; // grown to fit, never shrunk under a person's resize
    if (mode !== "none" && this.node.size[1] < height) this.node.setSize([this.node.size[0], height]);
  }

  message(text) {
    this.setMode("message");
    this.player.label.textContent = text;
  }

  /** Plays the frames of ``folder`` (listed by GET /recapture/frames, read through /view). */
  showFolder(folder) {
    if (this.folder === folder && this.player.frames.length) {
      this.setMode("frames");
      this.player.start();
      return;
    }
    const id = ++this.request;
    this.folder = null;
    this.message(`loading the frames of ${folder}`);
    api.fetchApi(`/recapture/frames?${new URLSearchParams({ folder })}`)
      .then(async (r) => {
        const body = await r.json();
        if (id !== this.request || this.folderValue !== folder || this.linked) return;
        if (!r.ok || !body.frames?.length) {
          this.message(`no preview of ${folder}: ${body.error ?? "it holds no frames"}`);
          return;
        }
        this.folder = folder;
        this.setMode("frames");
        this.player.onExecuted({ recapture_player: [{ frames: body.frames }] });
        if (body.total > body.frames.length) this.player.label.textContent += ` (first ${body.frames.length} of ${body.total})`;
        this.node.setDirtyCanvas?.(true, true);
      })
      .catch((e) => {
        if (id === this.request) this.message(`no preview of ${folder}`);
        warnOnce("could not list the frames folder", e);
      });
  }

  /** Tries ``video`` in this browser: if it cannot play it, the core's preview (which keeps the last file
   * it could play) is emptied and hidden, and a line says so. */
  probe(video) {
    this.probed = video;
    this.unplayable = null;
    const el = document.createElement("video");
    Object.assign(el, { muted: true, preload: "auto" });
    const done = (playable) => this.guard(() => {
      el.removeAttribute("src");
      if (this.probed !== video) return;
      if (!playable) {
        this.unplayable = video;
        this.node.videoContainer?.replaceChildren();
      }
      this.update();
    });
    el.onloadeddata = () => done(true);
    el.onerror = () => done(false);
    el.src = inputFileUrl(video);
  }

  /** The video widget changed (picked or uploaded): the previous file's preview goes at once. */
  videoChanged() {
    this.node.videoContainer?.replaceChildren();
    this.probed = null;
    this.update();
  }
}

/** Adds the preview logic to a Load Video node. Never throws: the node works without it. */
export function attachLoadVideoPreview(node) {
  try {
    const preview = new LoadVideoPreview(node);
    node.recaptureLoadVideo = preview; // for tests and debugging
    const after = (target, method, fn) => runAfter(target, method, (f) => preview.guard(f), fn);
    const video = preview.widget("video");
    if (video) after(video, "callback", () => preview.videoChanged());
    const folder = preview.widget("frames_folder");
    if (folder) after(folder, "callback", () => preview.update());
    after(node, "onConnectionsChange", () => preview.update());
    after(node, "onConfigure", () => { preview.probed = null; preview.update(); });
    // the core adds its video preview when a file first loads: it starts hidden if it is not what is read
    after(node, "addDOMWidget", (name) => { if (name === CORE_PREVIEW) preview.update(); });
    after(node, "onRemoved", () => preview.player.pause());
    preview.update();
  } catch (e) {
    warnOnce("could not add the preview logic to the node", e);
  }
}
