"""Times Stage 1 anchor rendering: `python bench/render.py [--device cpu|cuda|mps] [--frames 25 ...]`.

Renders a synthetic clip (exact depth) along a 15 degree orbit, after a warm-up, and prints the median
of several runs with the device, torch version and date.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recapture import camera, synthetic  # noqa: E402
from recapture.pointcloud import make_point_cloud  # noqa: E402
from recapture.render import render_anchor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chunk-frames", type=int, default=None, help="frames per chunk (default: the renderer's)")
    args = parser.parse_args()

    device = torch.device(args.device)
    clip = synthetic.source_clip(2, args.height, args.width)  # ray tracing 25 frames would dominate: repeat 2
    frames = clip.frames.repeat((args.frames + 1) // 2, 1, 1, 1)[: args.frames]
    depth = clip.depth.repeat((args.frames + 1) // 2, 1, 1)[: args.frames]
    cloud = make_point_cloud(frames.to(device), depth.to(device), kind="metric")
    path = camera.preset_path("orbit_left", args.frames, 15, pivot_distance=3.0)

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        anchor, _ = render_anchor(cloud, path, chunk_frames=args.chunk_frames)
        if device.type == "cuda":
            torch.cuda.synchronize()
        anchor.sum().item()
        return time.perf_counter() - start

    run()
    times = [run() for _ in range(args.runs)]
    seconds = statistics.median(times)
    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    print(f"render_anchor: {args.frames} frames at {args.height}x{args.width}, chunk {args.chunk_frames or 'default'}: "
          f"{seconds:.3f} s per clip ({1000 * seconds / args.frames:.1f} ms per frame){peak}")
    print(f"device {device} ({name}), torch {torch.__version__}, {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
