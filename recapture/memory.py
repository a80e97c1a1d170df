"""Out-of-memory errors turned into advice a person can act on."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class OutOfMemory(RuntimeError):
    """Raised instead of a device out-of-memory error; the message lists concrete ways out."""


def _is_out_of_memory(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


@contextlib.contextmanager
def explain_out_of_memory(stage: str, frames: int, height: int, width: int, extra: str = "") -> Iterator[None]:
    """Re-raises CUDA / MPS out-of-memory errors inside the block as ``OutOfMemory`` with advice.

    Args:
        stage: what was running ("training", "sampling"...), for the message.
        frames, height, width: the clip's size, to suggest a smaller one.
        extra: a stage-specific way out to add.
    """
    try:
        yield
    except BaseException as error:
        if not _is_out_of_memory(error):
            raise
        smaller = f"{max(64, width // 2 // 64 * 64)}x{max(64, height // 2 // 64 * 64)}"
        raise OutOfMemory(
            f"out of GPU memory while {stage} {frames} frames at {width}x{height}. Ways out: fewer frames, a lower "
            f"resolution (e.g. {smaller} in ReCapture Load Video), dtype bf16 or fp16 in ReCapture Load SVD"
            f"{', ' + extra if extra else ''}, or close other programs using the GPU.") from error


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextlib.contextmanager
def offloaded(*modules: torch.nn.Module, to: torch.device | str = "cpu") -> Iterator[None]:
    """Keeps ``modules`` on ``to`` (normally the CPU) for the block, and puts each back where it was.

    Moves on the CPU are no-ops, so this costs nothing there; on a GPU it frees the modules' weights
    for the block at the price of one copy each way over the bus (SVD-XT's CLIP and VAE in bf16:
    about 1.4 GB).
    """
    homes = [_device_of(m) for m in modules]
    try:
        for m in modules:
            m.to(to)
        yield
    finally:
        for m, home in zip(modules, homes):
            m.to(home)


@contextlib.contextmanager
def checkpointed_blocks(unet: torch.nn.Module, feed_forwards: bool = False) -> Iterator[None]:
    """Gradient checkpointing of every residual and transformer block of SVD's UNet, for the block.

    Each ``SpatioTemporalResBlock`` and whole ``TransformerSpatioTemporalModel`` (spatial *and*
    temporal attention, their mixer and projections) keeps only its inputs and recomputes its insides
    during backward. diffusers' own checkpointing wraps the residual blocks and the spatial
    transformer blocks but not the temporal ones, so at 14x576x1024 it still keeps about 34 GB of
    activations (``bench/memory.py``). Gradients are unchanged; the price is one more forward pass.
    ``feed_forwards`` also checkpoints each feed-forward inside them (their wide GEGLU activations
    dominate a block's recomputation), for one more forward pass of those. Keep the backward inside
    the block.
    """
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    from torch.utils.checkpoint import checkpoint

    kinds = (SpatioTemporalResBlock, TransformerSpatioTemporalModel, *((FeedForward,) if feed_forwards else ()))
    blocks = [m for m in unet.modules() if isinstance(m, kinds)]

    def checkpointing(forward):
        def run(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return run

    for block in blocks:
        block.forward = checkpointing(block.forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward  # the class's forward again
