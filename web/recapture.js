// ComfyUI-ReCapture frontend extension. Served at /extensions/<pack folder>/; relative imports only,
// because the folder name depends on how the pack was installed.
import { app } from "../../scripts/app.js";
import { NODE_TYPE as CAMERA_NODE, attachCameraEditor } from "./camera_editor.js";
import { PLAYER_NODES, attachVideoPlayer } from "./video_player.js";

const NODE_COLOR = "#2a3a4f";
const NODE_BGCOLOR = "#1d2733";

app.registerExtension({
  name: "ReCapture.Core",
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
  },
});
