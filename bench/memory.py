"""Estimates peak GPU memory (and FLOPs) without a GPU: `python bench/memory.py [--frames 14 --height 576 --width 1024]`.

Runs the real training and sampling code on the full-size SVD-XT architecture with *fake* tensors
(torch's FakeTensorMode: shapes and dtypes only, no data, no arithmetic, seconds on a CPU) and adds
up the bytes of the tensors alive after every operation. The peak is what those tensors need; a
real GPU adds the CUDA context (~0.5 GB), the caching allocator's fragmentation and kernel workspaces,
so read it as a lower bound and compare with `bench/train.py` / `bench/sample.py` on a GPU. torch's
FLOP counter runs along and gives the FLOPs of one training step and one sampling step (with CFG).

The models live on the meta device, standing in for the GPU, and the clip is given on the CPU as ComfyUI
holds it; only tensors on the stand-in device count, so what the code keeps in host memory (the frames,
a long clip's latents) does not, and a tensor left on the wrong device fails here as it would on a GPU.
Attention is counted as a flash kernel (output and log-sum-exp, no attention matrix), as PyTorch's
SDPA runs it on CUDA in bf16 and fp16. Data-dependent checks on the inputs are skipped (there is no
data); modules that the code parks on the CPU (``recapture.memory.offloaded``) do not count while
parked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import weakref
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import recapture.memory  # noqa: E402
import recapture.sampling  # noqa: E402
import recapture.train  # noqa: E402
from recapture.lora import adapter_state, remove_lora_adapters  # noqa: E402
from recapture.config import SampleConfig, TrainConfig  # noqa: E402
from recapture.sampling import sample_video, sdedit  # noqa: E402
from recapture.svd import svd_configs, svd_from_configs  # noqa: E402
from recapture.train import train_recapture_lora  # noqa: E402
from recapture.types import TrainedLoRA  # noqa: E402
from memory_options import add_memory_options, describe, memory_from_args  # noqa: E402

GiB = 2**30
DEVICE = "meta"  # the GPU's stand-in: fake tensors there have shapes and a device, and autograd runs on them


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive, and their peak, over the operations run inside it."""

    def __init__(self):
        super().__init__()
        self.alive: dict[int, tuple[weakref.finalize, int]] = {}
        self.parked: set[int] = set()
        self.now = 0
        self.peak = 0

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "cpu":  # host memory
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.alive:
            return
        size = storage.nbytes()

        def freed(key=key, size=size):
            self.alive.pop(key, None)
            if key not in self.parked:
                self.now -= size
            self.parked.discard(key)

        self.alive[key] = (weakref.finalize(storage, freed), size)
        self.now += size
        self.peak = max(self.peak, self.now)

    def park(self, modules, parked: bool) -> None:
        """Counts the modules' weights as off the device (``parked``) or back on it."""
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                key = id(tensor.untyped_storage())
                if key not in self.alive or (key in self.parked) == parked:
                    continue
                size = self.alive[key][1]
                (self.parked.add if parked else self.parked.discard)(key)
                self.now += -size if parked else size
        self.peak = max(self.peak, self.now)

    def reset_peak(self) -> None:
        self.peak = self.now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            # A number read back from the device (a loss for the progress bar, a finiteness check):
            # fake tensors have none; a harmless stand-in keeps the code running.
            return True if args[0].dtype == torch.bool else 1
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out


@contextlib.contextmanager
def estimating(tracker: LiveBytes):
    """Patches the pack's parking and input checks, and torch's parameter swap, for fake tensors."""
    offloaded, check = recapture.memory.offloaded, recapture.train._check_inputs
    sigmas, refine = recapture.sampling.karras_sigmas, recapture.sampling.refine_sigmas

    @contextlib.contextmanager
    def parked(*modules, to="cpu"):
        tracker.park(modules, True)
        try:
            yield
        finally:
            tracker.park(modules, False)

    def real_sigmas(models, steps):  # the scheduler works in numpy: give it real tensors
        with unset_fake_temporarily():
            return sigmas(models, steps)

    def real_refine_sigmas(models, config):  # SDEdit's start picks sigmas by value: real tensors too
        with unset_fake_temporarily():
            return refine(models, config)

    def set_data(t1, t2):  # Module.to() swaps fake parameters, which the fake mode's weakrefs forbid
        t1.data = t2.data

    def flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if attn_mask is not None or kwargs.get("enable_gqa"):
            return attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, is_causal,
                                                                          scale=scale)[0]

    def inject_on_device(*args, **kwargs):  # PEFT makes the LoRA layers on the CPU, then moves them: make them there
        with torch.device(DEVICE):
            return inject(*args, **kwargs)

    inject, recapture.train.inject_lora_adapters = recapture.train.inject_lora_adapters, inject_on_device
    recapture.train.offloaded = recapture.sampling.offloaded = parked
    recapture.train._check_inputs = lambda *a, **k: None  # reads data; the real inputs are fine by construction
    recapture.sampling.karras_sigmas, recapture.sampling.refine_sigmas = real_sigmas, real_refine_sigmas
    swap, torch.utils.swap_tensors = torch.utils.swap_tensors, set_data
    attention = torch.nn.functional.scaled_dot_product_attention  # on the meta device it would pick the math kernel
    torch.nn.functional.scaled_dot_product_attention = flash_attention
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = attention
        recapture.train.offloaded = recapture.sampling.offloaded = offloaded
        recapture.train.inject_lora_adapters = inject
        recapture.train._check_inputs = check
        recapture.sampling.karras_sigmas, recapture.sampling.refine_sigmas = sigmas, refine
        torch.utils.swap_tensors = swap


def meta_svd(num_frames: int, dtype: torch.dtype):
    """SVD's modules on the meta device (no storage): ``give_storage`` them inside the fake mode."""
    models = svd_from_configs(svd_configs(num_frames), "svd_xt" if num_frames == 25 else "svd", device="meta")
    for module in (models.unet, models.vae, models.image_encoder):
        module.to(dtype)
    return models


def give_storage(models) -> None:
    for module in (models.unet, models.vae, models.image_encoder):
        module.to_empty(device=DEVICE)


def train_config(args) -> TrainConfig:
    """Two steps (the first also encodes) with the command line's settings."""
    return TrainConfig(steps=2, rank=args.rank, spatial_frames=args.spatial_frames, memory=memory_from_args(args))


def sample_config(args) -> SampleConfig:
    return SampleConfig(steps=2, decode_chunk_size=args.decode_chunk, memory=memory_from_args(args))


def count_flops(args, dtype, anchor, mask, sample_frames: int) -> None:
    """FLOPs of one training step (the second: the first also encodes) and one sampling step, in a pass
    of its own: the FLOP counter keeps tensors alive for its module tracking, which would spoil the
    memory figures."""
    models = meta_svd(25, dtype)
    with (FakeTensorMode(allow_non_fake_inputs=True), LiveBytes() as stand_ins, estimating(stand_ins),
          FlopCounterMode(display=False) as flops):
        give_storage(models)
        marks = []
        if args.skip != "train":
            train_recapture_lora(models, anchor, mask, anchor, train_config(args),
                                 lambda *_: marks.append(flops.get_total_flops()))
            print(f"training step: {(marks[1] - marks[0]) / 1e12:.1f} TFLOP (recomputation included)")
        if args.skip != "sample":
            marks.clear()
            sample_video(models, None, anchor[0], sample_frames, sample_config(args),
                         lambda _step, window: window == 0 and marks.append(flops.get_total_flops()))
            print(f"sampling step ({sample_frames} frames, CFG): {(marks[1] - marks[0]) / 1e12:.1f} TFLOP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=14, help="training clip length (sampling: --sample-frames)")
    parser.add_argument("--sample-frames", type=int, default=None, help="frames to sample (default: --frames)")
    parser.add_argument("--height", type=int, default=576)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--spatial-frames", type=int, default=4, help="source frames per spatial LoRA step")
    parser.add_argument("--rank", type=int, default=TrainConfig.rank)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument("--decode-chunk", type=int, default=SampleConfig.decode_chunk_size, help="frames the VAE decodes at once")
    add_memory_options(parser)
    parser.add_argument("--skip", choices=["train", "sample"], default=None)
    parser.add_argument("--flops", action="store_true",
                        help="also count the FLOPs of one training step and one sampling step (a second pass)")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    sample_frames = args.sample_frames or args.frames
    size = f"{args.height}x{args.width}"

    anchor = torch.rand(args.frames, args.height, args.width, 3)  # real inputs, made fake on use
    mask = torch.ones(args.frames, args.height, args.width)
    tracker = LiveBytes()
    models = meta_svd(25, dtype)
    with FakeTensorMode(allow_non_fake_inputs=True), tracker, estimating(tracker):
        give_storage(models)
        weights = tracker.now
        print(f"SVD-XT weights in {args.dtype}: {weights / GiB:.2f} GiB")
        if args.skip != "train":
            tracker.reset_peak()
            train_peak = {}

            def on_step(step, *_):
                train_peak[step] = tracker.peak
                tracker.reset_peak()

            train_recapture_lora(models, anchor, mask, anchor, train_config(args), on_step)
            print(f"training {args.frames}x{size} + {args.spatial_frames} spatial frames, rank {args.rank}, "
                  f"{describe(args)}: "
                  f"encoding + first step {train_peak[0] / GiB:.2f} GiB, later steps {train_peak[1] / GiB:.2f} GiB")
        if args.skip != "sample":
            recapture.train.inject_lora_adapters(models.unet, rank=args.rank)  # on the device (estimating)
            lora = TrainedLoRA(temporal=adapter_state(models.unet, "temporal", float(args.rank)),
                               spatial=adapter_state(models.unet, "spatial", float(args.rank)),
                               rank=args.rank, alpha=float(args.rank))
            remove_lora_adapters(models.unet)
            config = sample_config(args)
            tracker.reset_peak()
            frames = sample_video(models, lora, anchor[0], sample_frames, config)
            sample_peak = tracker.peak
            tracker.reset_peak()
            sdedit(models, lora, frames, config)
            print(f"sampling {sample_frames}x{size} with CFG, LoRAs merged, decode chunk {args.decode_chunk}, "
                  f"memory plan {args.memory}: {sample_peak / GiB:.2f} GiB; SDEdit {tracker.peak / GiB:.2f} GiB")
    if args.flops:
        count_flops(args, dtype, anchor, mask, sample_frames)
    print(f"estimate (fake tensors, flash attention, no allocator overhead or CUDA context), torch {torch.__version__}, "
          f"{datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
