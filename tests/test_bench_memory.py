"""bench/memory.py keeps working as the code it patches changes (it is not run otherwise in CI)."""

from __future__ import annotations

import re
import subprocess
import sys

from comfy_harness import REPO


def test_memory_estimate_counts_the_weights_and_sees_the_memory_plans():
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "bench/memory.py", "--frames", "4", "--height", "128", "--width", "128",
                               *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def gib(pattern: str, text: str) -> float:
        return float(re.search(pattern, text)[1])

    fast = run("--memory", "fast", "--flops")
    # SVD-XT: 1.52 G UNet + 0.63 G CLIP + 0.10 G VAE parameters, 2 bytes each in bf16
    assert gib(r"weights in bf16: ([\d.]+) GiB", fast) == 4.20
    assert float(re.search(r"training step: ([\d.]+) TFLOP", fast)[1]) > 0
    low = run("--memory", "low", "--decode-chunk", "2")
    step = gib(r"later steps ([\d.]+) GiB", low)
    assert 2.84 < step < gib(r"later steps ([\d.]+) GiB", fast)  # the UNet alone is 2.84 GiB; CLIP and the VAE parked
    assert gib(r"memory plan low: ([\d.]+) GiB", low) < gib(r"memory plan fast: ([\d.]+) GiB", fast)
