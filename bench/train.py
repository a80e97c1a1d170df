"""Times ReCapture's LoRA training step: `python bench/train.py [--device cuda] [--frames 14 --height 576 --width 1024]`.

Builds the full-size SVD-XT architecture with random weights (step time and memory do not depend on
weight values; pass --tiny on a CPU), trains for a few steps and prints the median step time (one
temporal step on the clip + one spatial step on source frames), the peak GPU memory, and the model
FLOP utilisation against the GPU's dense bf16 peak (--peak-tflops, default 990 for an H100).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recapture.svd import build_svd, build_tiny_svd  # noqa: E402
from recapture.config import TrainConfig  # noqa: E402
from recapture.train import train_recapture_lora  # noqa: E402
from memory_options import add_memory_options, describe, memory_from_args  # noqa: E402


def tiny_models(device):
    models = build_tiny_svd()
    for m in (models.unet, models.vae, models.image_encoder):
        m.to(device)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--spatial-frames", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="tiny random model (for a CPU)")
    add_memory_options(parser)
    parser.add_argument("--peak-tflops", type=float, default=990.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = tiny_models(device) if args.tiny else build_svd(25, dtype, device)
    anchor = torch.rand(args.frames, args.height, args.width, 3)
    mask = torch.ones(args.frames, args.height, args.width)
    config = TrainConfig(steps=args.steps, spatial_frames=args.spatial_frames, memory=memory_from_args(args))

    stamps: list[float] = []
    # On a GPU one step (the third) also runs under torch's profiler: the share of the step that the
    # GPU spends in kernels says whether the host (Python, launches, syncs) holds it back.
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) \
        if device.type == "cuda" and args.steps >= 4 else None
    profiled: list[float] = []

    def on_step(step, *_):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if profiler is not None and step == 1:
            profiler.start()
            profiled.append(time.perf_counter())
        elif profiler is not None and step == 2:
            profiler.stop()
            profiled.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_recapture_lora(models, anchor, mask, anchor, config, on_step)
    step_times = [b - a for a, b in zip(stamps, stamps[1:])][1:] or [stamps[0] - start]
    seconds = statistics.median(step_times)

    flops = None
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            train_recapture_lora(models, anchor, mask, anchor, dataclasses.replace(config, steps=1))
        flops = counter.get_total_flops()  # includes the one-off encoding: an upper bound per step
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"train step ({args.frames}x{args.height}x{args.width} temporal + {args.spatial_frames} spatial frames, "
          f"{describe(args)}): {seconds:.3f} s median, {args.steps} steps, "
          f"peak GPU memory {peak:.2f} GiB")
    if flops:
        print(f"~{flops / 1e12:.1f} TFLOP per step (upper bound) -> MFU <= {flops / seconds / 1e12 / args.peak_tflops:.1%}")
    if len(profiled) == 2:
        busy = sum(getattr(e, "self_device_time_total", 0) for e in profiler.key_averages()) / 1e6
        wall = profiled[1] - profiled[0]
        print(f"GPU busy in kernels {busy:.3f} s of a {wall:.3f} s step ({busy / wall:.0%}; well below 100 %: the host "
              "or a sync holds the GPU back)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), model {'tiny' if args.tiny else models.name}, torch {torch.__version__}, "
          f"{datetime.date.today().isoformat()}; 400 steps would take {400 * seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
