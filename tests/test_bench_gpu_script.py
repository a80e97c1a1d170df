"""bench/gpu.sh, the one command a lent GPU runs, keeps working (DRY=1: the same sequence on the CPU
with tiny models)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from comfy_harness import REPO


def test_gpu_script_runs_every_benchmark_and_logs_their_figures(tmp_path):
    env = {**os.environ, "DRY": "1", "PY": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "bench/gpu.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    log = (tmp_path / "gpu.log").read_text()
    assert re.search(r"render_anchor: 4 frames .* s per clip", log)
    assert len(re.findall(r"train step \(.*memory plan \w+, kept from \w+ FLOPs\): [\d.]+ s median", log)) == 3
    assert len(re.findall(r"sample 4x64x128, .* memory plan \w+: .*\(([\d.]+) s per step", log)) == 2
    assert re.search(r"whole method, 4x64x128.*: [\d.]+ s", log)
