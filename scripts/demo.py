"""`make demo`: runs a shipped workflow headless on the bundled sample and prints the outputs.

The sample (a synthetic scene with exact depth) is written into the dev ComfyUI's input folder, the
workflow file is converted to an API prompt with the live server's /object_info and queued, and the
videos land under the dev ComfyUI's output/recapture/. Without SVD that is the anchor-only workflow;
with models/checkpoints/svd_xt.safetensors in the dev ComfyUI's base it is the full method.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from comfy_harness import DEV_HOME, REPO, ComfyError, ComfyServer, ui_to_api

sys.path.insert(0, str(REPO))
from recapture.demo_clip import write_demo_clip  # noqa: E402

from build_workflows import SVD_FILE  # noqa: E402

WORKFLOWS = REPO / "workflows"


def saved_files(server: ComfyServer, entry: dict) -> list[Path]:
    files = []
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            if item.get("type") == "output":
                files.append(server.base / "output" / item.get("subfolder", "") / item["filename"])
    return files


def main() -> int:
    base = DEV_HOME / "base"
    write_demo_clip(base / "input")
    print(f"sample written to {base / 'input'}", flush=True)
    full = (base / "models" / "checkpoints" / SVD_FILE).is_file()
    workflow = WORKFLOWS / ("ReCapture - full method with SVD.json" if full else "ReCapture - anchor video and mask.json")
    if not full:
        print(f"(no models/checkpoints/{SVD_FILE} under {base}: running Stage 1 only)", flush=True)
    with ComfyServer(base=base) as server:
        print(f"ComfyUI with the pack is up at {server.url}; running {workflow.name}", flush=True)
        prompt = ui_to_api(json.loads(workflow.read_text()), server.object_info())
        start = time.monotonic()
        try:
            entry = server.run(prompt, timeout=3600 if full else 900)
        except ComfyError as e:
            print(f"the workflow failed: {e}\nserver log: {server.log_path}", file=sys.stderr)
            return 1
        print(f"done in {time.monotonic() - start:.1f} s. Outputs:")
        for f in saved_files(server, entry):
            print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
