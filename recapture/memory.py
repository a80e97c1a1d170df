"""GPU memory: keeping models off the device while others work, and running out of memory as data."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class OutOfMemory(RuntimeError):
    """Raised instead of a device out-of-memory error, with what was running; each front end (node,
    command line) adds the ways out in its own terms (``with_advice``).

    Attributes:
        stage: "training", "sampling" or "refining".
        frames, height, width: the clip that did not fit.
        window: the frames SVD saw at once (a long clip goes in windows); fewer frames than that would
            help, a shorter clip would not.
    """

    def __init__(self, stage: str, frames: int, height: int, width: int, advice: str = "",
                 window: int | None = None):
        self.stage, self.frames, self.height, self.width, self.advice = stage, frames, height, width, advice
        self.window = min(frames, window or frames)
        verb = "training on" if stage == "training" else stage
        message = f"out of GPU memory while {verb} {frames} frames at {width}x{height}"
        if self.window < frames:
            message += f" ({self.window} at a time: a shorter clip would not need less)"
        super().__init__(f"{message}. {advice}" if advice else message)

    def smaller_size(self) -> str:
        """About half the width and height, in multiples of 64 (what SVD takes): a size to suggest."""
        return f"{max(64, self.width // 2 // 64 * 64)}x{max(64, self.height // 2 // 64 * 64)}"

    def with_advice(self, advice: str) -> OutOfMemory:
        """The same error with ``advice`` (the ways out, worded for the user's front end) appended."""
        error = OutOfMemory(self.stage, self.frames, self.height, self.width, advice, self.window)
        error.__cause__ = self.__cause__
        return error


def _is_out_of_memory(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


@contextlib.contextmanager
def out_of_memory_as(stage: str, frames: int, height: int, width: int, window: int | None = None) -> Iterator[None]:
    """Re-raises CUDA / MPS out-of-memory errors inside the block as ``OutOfMemory(stage, ...)``."""
    try:
        yield
    except BaseException as error:
        if isinstance(error, OutOfMemory) or not _is_out_of_memory(error):
            raise
        raise OutOfMemory(stage, frames, height, width, window=window) from error


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextlib.contextmanager
def offloaded(*modules: torch.nn.Module, to: torch.device | str = "cpu") -> Iterator[None]:
    """Keeps ``modules`` on ``to`` (normally the CPU) for the block, and puts each back where it was.

    Moves on the CPU are no-ops, so this costs nothing there; on a GPU it frees the modules' weights
    for the block at the price of one copy each way over the bus.
    """
    homes = [_device_of(m) for m in modules]
    try:
        for m in modules:
            m.to(to)
        yield
    finally:
        for m, home in zip(modules, homes):
            m.to(home)
