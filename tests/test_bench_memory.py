"""bench/memory.py keeps working as the code it patches changes (it is not run otherwise in CI)."""

from __future__ import annotations

import re
import subprocess
import sys

from comfy_harness import REPO


def test_memory_estimate_counts_the_weights_and_sees_checkpointing_and_low_memory():
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "bench/memory.py", "--frames", "4", "--height", "128", "--width", "128",
                               *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def gib(pattern: str, text: str) -> float:
        return float(re.search(pattern, text)[1])

    plain = run()
    # SVD-XT: 1.52 G UNet + 0.63 G CLIP + 0.10 G VAE parameters, 2 bytes each in bf16
    assert gib(r"weights in bf16: ([\d.]+) GiB", plain) == 4.20
    step = gib(r"later steps ([\d.]+) GiB", plain)
    assert 2.84 < step  # the UNet alone is 2.84 GiB; CLIP and the VAE are parked
    unchecked = run("--no-checkpointing", "--skip", "sample", "--flops")
    assert step < gib(r"later steps ([\d.]+) GiB", unchecked)
    assert float(re.search(r"training step: ([\d.]+) TFLOP", unchecked)[1]) > 0
    sampling = gib(r"low_memory False: ([\d.]+) GiB", plain)
    low = gib(r"low_memory True: ([\d.]+) GiB", run("--low-memory", "--decode-chunk", "2", "--skip", "train"))
    assert low < sampling
