"""bench/memory.py keeps working as the code it patches changes (it is not run otherwise in CI)."""

from __future__ import annotations

import re
import subprocess
import sys

from comfy_harness import REPO


def test_memory_estimate_counts_the_weights_and_sees_the_memory_plans():
    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "bench/memory.py", "--frames", "4", "--height", "128", "--width", "128",
                                 *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def output(run: subprocess.Popen) -> str:
        stdout, stderr = run.communicate(timeout=400)
        assert run.returncode == 0, stderr[-2000:]
        return stdout

    def gib(pattern: str, text: str) -> float:
        return float(re.search(pattern, text)[1])

    # the two estimates run side by side: each is one Python thread walking the full-size model's operations
    runs = start("--memory", "fast", "--flops"), start("--memory", "low", "--decode-chunk", "2")
    try:
        fast, low = (output(run) for run in runs)
    finally:
        for run in runs:
            run.kill()  # the other one, when one fails
    # SVD-XT: 1.52 G UNet + 0.63 G CLIP + 0.10 G VAE parameters, 2 bytes each in bf16
    assert gib(r"weights in bf16: ([\d.]+) GiB", fast) == 4.20
    assert float(re.search(r"training step: ([\d.]+) TFLOP", fast)[1]) > 0
    step = gib(r"later steps ([\d.]+) GiB", low)
    assert 2.84 < step < gib(r"later steps ([\d.]+) GiB", fast)  # the UNet alone is 2.84 GiB; CLIP and the VAE parked
    assert gib(r"memory plan low: ([\d.]+) GiB", low) < gib(r"memory plan fast: ([\d.]+) GiB", fast)
