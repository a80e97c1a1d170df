"""Gradient checkpointing of SVD's UNet, and its feed-forwards in slices of tokens (see ``MemoryPlan``)."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator

import torch


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


def _in_token_slices(forward, tokens: int, checkpointed: bool = False):
    """A feed-forward's ``forward`` run over slices of ``tokens`` tokens (it treats each token alone, so
    only rounding changes); ``checkpointed``: each slice checkpointed while gradients are on."""
    from torch.utils.checkpoint import checkpoint

    def run(hidden_states, *args, **kwargs):
        step = functools.partial(checkpoint, forward, use_reentrant=False) \
            if checkpointed and torch.is_grad_enabled() else forward
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        if len(rows) <= tokens:
            return step(hidden_states)
        parts = [step(part) for part in rows.split(tokens)]
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


def feed_forwards_in_slices(unet: torch.nn.Module, tokens: int) -> contextlib.AbstractContextManager[None]:
    """Every feed-forward of the UNet runs over slices of ``tokens`` tokens, for the block: its wide
    GEGLU activations then exist for one slice at a time."""
    from diffusers.models.attention import FeedForward

    blocks = [m for m in unet.modules() if isinstance(m, FeedForward)]
    return _wrapped_forwards(blocks, lambda block, forward: _in_token_slices(forward, tokens))


def checkpointed_blocks(unet: torch.nn.Module, keep_outputs_from_flops: int | None = None,
                        feed_forward_tokens: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Gradient checkpointing of every residual and transformer block of SVD's UNet, for the block.

    Each ``SpatioTemporalResBlock`` and whole ``TransformerSpatioTemporalModel`` (spatial *and*
    temporal attention, their mixer and projections) keeps only its inputs and recomputes its insides
    during backward: diffusers' own checkpointing leaves the temporal transformer blocks out, which
    keeps most activations at full size. Gradients are unchanged; the price is one more forward pass,
    less the operations whose outputs cost ``keep_outputs_from_flops`` per element or more to recompute
    (those outputs are kept; None: none kept). ``feed_forward_tokens`` (the least memory, with nothing
    kept) also checkpoints each feed-forward inside them in slices of that many tokens, as their wide
    GEGLU activations dominate a block's recomputation. Keep the backward inside the block.
    """
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    from torch.utils.checkpoint import checkpoint

    if feed_forward_tokens is not None and keep_outputs_from_flops is not None:
        raise ValueError("checkpointing the feed-forwards is for the least memory: keep no outputs with it "
                         "(keep_outputs_from_flops=None)")
    kinds = (SpatioTemporalResBlock, TransformerSpatioTemporalModel, *((FeedForward,) if feed_forward_tokens else ()))
    blocks = [m for m in unet.modules() if isinstance(m, kinds)]
    context_fn = _keeping_costly_outputs(keep_outputs_from_flops) if keep_outputs_from_flops is not None else None
    options = {"context_fn": context_fn} if context_fn is not None else {}

    def checkpointing(forward):
        def run(*args, **kwargs):
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **options, **kwargs)
        return run

    # a feed-forward's slices are checkpointed each: its backward holds one slice's wide activations
    return _wrapped_forwards(blocks, lambda block, forward: _in_token_slices(forward, feed_forward_tokens, checkpointed=True)
                             if isinstance(block, FeedForward) else checkpointing(forward))
