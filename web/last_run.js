// The pack's in-node previews come back after a page reload, in a new tab, after switching workflows and
// on cached runs: Render Anchor's, Sample's and Refine's players, the camera editor's run (points, pivot)
// and Train Masked LoRA's loss curve. These nodes are not output nodes, so a cached run sends them nothing
// and a new page knows nothing of the last run; the server finds each node's last ui output in ComfyUI's
// history (POST /recapture/last_outputs, nodes/last_outputs.py), which lives exactly as long as the temp
// files it names. Only nodes that show nothing yet are filled in: a real run's output always wins.
// Fails soft: a failure is logged once with console.warn and the nodes just stay empty.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

// node type -> the key of its ui output
export const RESTORED_NODES = {
  ReCaptureRenderAnchor: "recapture_player",
  ReCaptureSVDDualLoRASample: "recapture_player",
  ReCaptureSDEditRefine: "recapture_player",
  ReCaptureCameraTrajectory: "recapture_camera",
  ReCaptureTrainMaskedLoRA: "images",
};
let warned = false;

function warnOnce(message, error) {
  if (warned) return;
  warned = true;
  console.warn(`[ReCapture] last run's previews: ${message}`, error ?? "");
}

function showsNothing(node) {
  if (node.recapturePlayer) return !node.recapturePlayer.frames.length;
  if (node.recaptureEditor) return !node.recaptureEditor.run;
  return !app.nodeOutputs?.[String(node.id)]?.images?.length;
}

function show(node, { output, prompt_id }) {
  if (RESTORED_NODES[node.type] === "images") {
    // as the run's own message did: the frontend keeps the output and draws it, in both node renderers
    api.dispatchCustomEvent("executed", { node: String(node.id), display_node: String(node.id), output, prompt_id });
  } else {
    node.onExecuted?.(output); // the player's or the editor's handler
  }
}

/** Fills the top-level nodes of RESTORED_NODES that show nothing (of ``ids`` only, when given) with
 * their last run's ui output. Resolves when done; never rejects. */
export async function restoreLastRun(ids = null) {
  try {
    const graph = app.graph;
    const nodes = (graph?.nodes ?? graph?._nodes ?? []).filter((n) => n.type in RESTORED_NODES
      && (ids === null || ids.includes(String(n.id))) && showsNothing(n));
    if (!graph?.id || !nodes.length) return;
    const body = { workflow: graph.id,
      nodes: nodes.map((n) => ({ id: String(n.id), class_type: n.type, key: RESTORED_NODES[n.type] })) };
    const response = await api.fetchApi("/recapture/last_outputs", { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const { outputs } = await response.json();
    if (app.graph !== graph || graph.id !== body.workflow) return; // another workflow was loaded meanwhile
    for (const node of nodes) {
      const found = outputs?.[String(node.id)];
      if (found && graph.getNodeById(node.id) === node && showsNothing(node)) show(node, found);
    }
  } catch (e) {
    warnOnce("could not restore them", e);
  }
}

/** Restores after every graph load and on cached runs (the extension's afterConfigureGraph and setup). */
export function watchCachedRuns() {
  api.addEventListener("execution_cached", ({ detail }) => {
    const ids = (detail?.nodes ?? []).map(String);
    if (ids.length) restoreLastRun(ids);
  });
}
