"""Times sampling and SDEdit: `python bench/sample.py [--device cuda] [--frames 25 --height 576 --width 1024 --steps 30]`.

Full-size SVD-XT architecture with random weights and a LoRA pair of rank 16 merged into the weights;
--tiny on a CPU. Prints seconds for the sampling run and per step, peak GPU memory and
an upper bound of the model FLOP utilisation (CFG doubles the batch).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recapture.config import SampleConfig  # noqa: E402
from recapture.lora import adapter_state, inject_lora_adapters, remove_lora_adapters  # noqa: E402
from recapture.sampling import sample_video, sdedit, window_count  # noqa: E402
from recapture.svd import build_svd, build_tiny_svd  # noqa: E402
from recapture.types import TrainedLoRA  # noqa: E402
from memory_options import add_memory_options, memory_from_args  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sdedit-strength", type=float, default=SampleConfig.refine_strength)
    parser.add_argument("--tiny", action="store_true", help="tiny random model (for a CPU)")
    add_memory_options(parser)
    parser.add_argument("--decode-chunk", type=int, default=SampleConfig.decode_chunk_size, help="frames the VAE decodes at once")
    parser.add_argument("--peak-tflops", type=float, default=990.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = build_tiny_svd() if args.tiny else build_svd(25, dtype, device)
    for m in (models.unet, models.vae, models.image_encoder):
        m.to(device)
    inject_lora_adapters(models.unet, rank=16)
    lora = TrainedLoRA(temporal=adapter_state(models.unet, "temporal", 16.0),
                       spatial=adapter_state(models.unet, "spatial", 16.0), rank=16, alpha=16.0)
    remove_lora_adapters(models.unet)
    prompt = torch.rand(args.height, args.width, 3)
    config = SampleConfig(steps=args.steps, refine_strength=args.sdedit_strength, decode_chunk_size=args.decode_chunk,
                          memory=memory_from_args(args))

    windows = window_count(models, args.frames, config)

    def timed(fn):
        stamps = []

        def on_step(_step, window):
            if window < windows - 1:  # a step ends with its last window
                return
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        start = time.perf_counter()
        out = fn(on_step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - start
        per_step = statistics.median([b - a for a, b in zip(stamps, stamps[1:])]) if len(stamps) > 2 else float("nan")
        return out, total, per_step

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed(lambda cb: sample_video(models, lora, prompt, args.frames, SampleConfig(steps=2)))  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    frames, total, per_step = timed(lambda cb: sample_video(models, lora, prompt, args.frames, config, cb))
    _, sd_total, _ = timed(lambda cb: sdedit(models, lora, frames, config, cb))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"sample {args.frames}x{args.height}x{args.width}, {args.steps} steps with CFG, memory plan {args.memory}: "
          f"{total:.2f} s total ({per_step:.3f} s per step, VAE decode and encode included in the total); SDEdit "
          f"strength {args.sdedit_strength}: {sd_total:.2f} s; peak GPU memory {peak:.2f} GiB")
    if device.type == "cuda":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            sample_video(models, lora, prompt, args.frames, SampleConfig(steps=1))
        print(f"~{counter.get_total_flops() / 1e12:.1f} TFLOP per step (upper bound) -> MFU <= "
              f"{counter.get_total_flops() / per_step / 1e12 / args.peak_tflops:.1%}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), model {models.name}, torch {torch.__version__}, {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
