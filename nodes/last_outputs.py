"""The last run's ui output of the pack's nodes, from ComfyUI's history: what the frontend's previews
(players, the camera editor's run, the loss curve) show again after a page reload, in a new tab, after
switching workflows and on cached runs, none of which sends these nodes anything (they are not output
nodes: a cached run only re-sends output nodes' ui). See web/last_run.js.

History, not the workflow: the previews are temp files, and ComfyUI's history lives exactly as long as
they do (both go when the server restarts), so what is found here can always be shown; and keeping
outputs in the workflow would mark it modified after every run."""

from __future__ import annotations

import json

from aiohttp import web

MAX_BODY_BYTES = 64 * 1024
MAX_NODES = 256
ASKED = "{workflow: the graph's id, nodes: [{id, class_type, key}]}"


def find_last_outputs(history: dict, workflow_id: str, nodes: list[dict]) -> dict:
    """For each asked node ``{"id", "class_type", "key"}``, the newest entry of ``history`` (ComfyUI's:
    prompt id -> ``{"prompt": (number, id, prompt, extra_data, ...), "outputs": {node id: ui}}``, oldest
    first) queued from the workflow ``workflow_id`` (its ``extra_pnginfo``) in which a node of that id and
    class left ui output under ``key`` -> ``{node id: {"output": ui, "prompt_id": id}}``. Prompts queued
    without a workflow (the API, scripts) are never matched: nothing says which graph they came from."""
    wanted = {n["id"]: n for n in nodes}
    found: dict[str, dict] = {}
    for prompt_id in reversed(list(history)):
        if len(found) == len(wanted):
            break
        entry = history[prompt_id]
        prompt = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(prompt, (list, tuple)) or len(prompt) < 4:
            continue
        graph, workflow = prompt[2], prompt[3]
        for key in ("extra_pnginfo", "workflow"):
            workflow = workflow.get(key) if isinstance(workflow, dict) else None
        if not isinstance(graph, dict) or not isinstance(workflow, dict) or workflow.get("id") != workflow_id:
            continue
        outputs = entry.get("outputs") or {}
        for node_id, want in wanted.items():
            node, output = graph.get(node_id), outputs.get(node_id)
            if (node_id not in found and isinstance(node, dict) and node.get("class_type") == want["class_type"]
                    and isinstance(output, dict) and output.get(want["key"])):
                found[node_id] = {"output": output, "prompt_id": prompt_id}
    return found


def _asked(body: bytes) -> tuple[str, list[dict]]:
    """The request body -> (workflow id, nodes); ``ValueError`` with the message for the caller."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError(f"the body must be JSON: {ASKED}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workflow"), str) or not isinstance(data.get("nodes"), list):
        raise ValueError(f"the request must be a JSON object {ASKED}")
    nodes = data["nodes"]
    if len(nodes) > MAX_NODES:
        raise ValueError(f"at most {MAX_NODES} nodes per request, got {len(nodes)}")
    for node in nodes:
        if not isinstance(node, dict) or not all(isinstance(node.get(k), str) for k in ("id", "class_type", "key")):
            raise ValueError(f"each node must be {{id, class_type, key}} (strings), got {node!r:.200}")
    return data["workflow"], nodes


async def last_outputs(request: web.Request) -> web.Response:
    """``POST /recapture/last_outputs`` with ``ASKED`` -> ``{"outputs": {node id: {"output": ui,
    "prompt_id": id}}}`` for the asked nodes found in the history (``find_last_outputs``); a bad body ->
    HTTP 400 ``{"error": message}``."""
    from server import PromptServer

    if (request.content_length or 0) > MAX_BODY_BYTES:
        return web.json_response({"error": f"the request is over {MAX_BODY_BYTES // 1024} KB"}, status=400)
    body = await request.content.read(MAX_BODY_BYTES + 1)
    try:
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"the request is over {MAX_BODY_BYTES // 1024} KB")
        workflow, nodes = _asked(body)
    except ValueError as e:
        return web.json_response({"error": str(e)}, status=400)
    history = PromptServer.instance.prompt_queue.get_history()  # a new dict of the entries (no copies)
    return web.json_response({"outputs": find_last_outputs(history, workflow, nodes)})
