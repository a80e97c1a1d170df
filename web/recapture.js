// ComfyUI-ReCapture frontend extension. Served at /extensions/<pack folder>/; relative imports only,
// because the folder name depends on how the pack was installed.
import { app } from "../../scripts/app.js";
import { NODE_TYPE as CAMERA_NODE, attachCameraEditor } from "./camera_editor.js";
import { PLAYER_NODES, attachVideoPlayer } from "./video_player.js";
import { NODE_TYPE as LOAD_VIDEO_NODE, attachLoadVideoPreview } from "./load_video.js";
import { addSearchAliases } from "./node_search.js";
import { restoreLastRun, watchCachedRuns } from "./last_run.js";

const NODE_COLOR = "#2a3a4f";
const NODE_BGCOLOR = "#1d2733";

app.registerExtension({
  name: "ReCapture.Core",
  setup() {
    watchCachedRuns(); // a cached run sends these nodes nothing: their last run's previews come back
    addSearchAliases(); // the node search also finds the pack's nodes by their aliases (never throws)
  },
  afterConfigureGraph() {
    // after a reload, in a new tab, after switching workflows: the last run's previews (never throws;
    // not awaited, so loading a graph never waits on it)
    restoreLastRun();
  },
  nodeCreated(node) {
    // One colour for the whole pack, so its stages stand out in a large graph.
    if (node.comfyClass?.startsWith("ReCapture")) {
      node.color ??= NODE_COLOR;
      node.bgcolor ??= NODE_BGCOLOR;
    }
    // The 3D camera-path editor: one per node, each with its own view (attachCameraEditor never throws).
    if (node.comfyClass === CAMERA_NODE) attachCameraEditor(node);
    // Frames play in the node that made them; Render Anchor's with a mask overlay (never throws).
    if (node.comfyClass in PLAYER_NODES) attachVideoPlayer(node);
    // Load Video previews what it will read; a connected video_input greys out its file widgets.
    if (node.comfyClass === LOAD_VIDEO_NODE) attachLoadVideoPreview(node);
  },
});
