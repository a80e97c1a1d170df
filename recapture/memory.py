"""Out-of-memory errors turned into advice a person can act on."""

from __future__ import annotations

import contextlib
import functools
import math
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


# Checkpointed blocks keep the outputs that cost at least this many FLOPs per element to compute again
# (attention over 2048+ keys, convolutions and matrix products over 4096+ inputs), and recompute the
# rest: at 14x576x1024 a training step needs 181 -> 157 TFLOP for 10.7 -> 12.4 GiB (bench/memory.py;
# 16384 gives 164 TFLOP at 11.5 GiB, 4096 152 TFLOP at 13.7 GiB, no checkpointing 128 TFLOP at 50 GiB).
# The choosing runs in Python for every operation of the blocks: on the CPU it added 0.07 s to a tiny
# model's 0.15 s step, which a GPU hides only while its own work per step is the larger part.
KEEP_OUTPUTS_FROM_FLOPS = 8192
# Tokens per slice of a feed-forward in low_memory training and sampling (its activations are 4-8x as
# wide as its input; slices of 65536 tokens: 8.3 GiB training at 14x576x1024, 16384: 7.7, 8192: 7.6).
FEED_FORWARD_TOKENS = 16384


@functools.cache
def _attention_kernels() -> tuple:
    """The fused SDPA kernels of this torch build (query, key, value come first in each)."""
    names = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    return tuple(getattr(torch.ops.aten, name).default for name in names if hasattr(torch.ops.aten, name))


def recompute_flops_per_element(op, args) -> int:
    """What computing one element of ``op``'s output again costs, in FLOPs, for the kinds of operation
    that carry SVD's arithmetic (fused attention, convolution, matrix product); 0 for the rest."""
    aten = torch.ops.aten
    if op in _attention_kernels():
        return 4 * args[1].shape[-2]  # two products over the keys
    if op is aten.convolution.default and not args[6]:  # not transposed: weight (out, in / groups, *kernel)
        return 2 * math.prod(args[1].shape[1:])
    if op is aten.mm.default:
        return 2 * args[0].shape[-1]
    if op is aten.addmm.default:
        return 2 * args[1].shape[-1]
    return 0


def _keeping_costly_outputs(min_flops: int):
    """A checkpoint ``context_fn`` that keeps the outputs costing ``min_flops`` per element or more, or
    None where this torch has no selective checkpointing (before 2.4)."""
    try:
        from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
    except ImportError:
        return None

    def policy(ctx, op, *args, **kwargs):
        if recompute_flops_per_element(op, args) >= min_flops:
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(create_selective_checkpoint_contexts, policy)


def _in_token_slices(forward, checkpointed: bool = False):
    """A feed-forward's ``forward`` run over slices of ``FEED_FORWARD_TOKENS`` tokens (it treats each token
    alone, so only rounding changes); ``checkpointed``: each slice checkpointed while gradients are on."""
    from torch.utils.checkpoint import checkpoint

    def run(hidden_states, *args, **kwargs):
        step = functools.partial(checkpoint, forward, use_reentrant=False) \
            if checkpointed and torch.is_grad_enabled() else forward
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        if len(rows) <= FEED_FORWARD_TOKENS:
            return step(hidden_states)
        parts = [step(part) for part in rows.split(FEED_FORWARD_TOKENS)]
        return torch.cat(parts).reshape(*hidden_states.shape[:-1], -1)
    return run


@contextlib.contextmanager
def _wrapped_forwards(blocks: list[torch.nn.Module], wrap) -> Iterator[None]:
    """Each block's ``forward`` replaced by ``wrap(block, forward)`` for the block, its class's after."""
    for block in blocks:
        block.forward = wrap(block, block.forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def feed_forwards_in_slices(unet: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Every feed-forward of the UNet runs over slices of ``FEED_FORWARD_TOKENS`` tokens, for the block:
    its wide GEGLU activations then exist for one slice at a time (sampling 25x576x1024 with CFG in
    low_memory: 7.1 -> 5.4 GiB, bench/memory.py)."""
    from diffusers.models.attention import FeedForward

    blocks = [m for m in unet.modules() if isinstance(m, FeedForward)]
    return _wrapped_forwards(blocks, lambda block, forward: _in_token_slices(forward))


def checkpointed_blocks(unet: torch.nn.Module, feed_forwards: bool = False, keep_from_flops: int | None =
                        KEEP_OUTPUTS_FROM_FLOPS) -> contextlib.AbstractContextManager[None]:
    """Gradient checkpointing of every residual and transformer block of SVD's UNet, for the block.

    Each ``SpatioTemporalResBlock`` and whole ``TransformerSpatioTemporalModel`` (spatial *and*
    temporal attention, their mixer and projections) keeps only its inputs and recomputes its insides
    during backward. diffusers' own checkpointing wraps the residual blocks and the spatial
    transformer blocks but not the temporal ones, so at 14x576x1024 it still keeps about 34 GB of
    activations (``bench/memory.py``). Gradients are unchanged; the price is one more forward pass,
    less the operations whose outputs cost ``keep_from_flops`` per element or more to recompute: those
    outputs are kept (None: none kept). ``feed_forwards`` (with ``keep_from_flops=None``: the least
    memory) also checkpoints each feed-forward inside them (their wide GEGLU activations dominate a
    block's recomputation), for one more forward pass of those. Keep the backward inside the block.
    """
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    from torch.utils.checkpoint import checkpoint

    if feed_forwards and keep_from_flops is not None:
        raise ValueError("checkpointing the feed-forwards is for the least memory: keep no outputs with it "
                         "(keep_from_flops=None)")
    kinds = (SpatioTemporalResBlock, TransformerSpatioTemporalModel, *((FeedForward,) if feed_forwards else ()))
    blocks = [m for m in unet.modules() if isinstance(m, kinds)]
    context_fn = _keeping_costly_outputs(keep_from_flops) if keep_from_flops is not None else None
    options = {"context_fn": context_fn} if context_fn is not None else {}

    def checkpointing(forward):
        def run(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **options, **kwargs)
        return run

    # a feed-forward's slices are checkpointed each: its backward holds one slice's wide activations
    return _wrapped_forwards(blocks, lambda block, forward: _in_token_slices(forward, checkpointed=True)
                             if isinstance(block, FeedForward) else checkpointing(forward))
