"""The ComfyUI pieces every node module uses: the V3 API and progress/cancel."""

from __future__ import annotations

try:  # the versioned API, as ComfyUI's maintainers recommend; `latest` on builds without it
    from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io, ui
except ImportError:  # pragma: no cover - depends on the ComfyUI build
    from comfy_api.latest import ComfyExtension, InputImpl, io, ui

import comfy.model_management
import comfy.utils

__all__ = ["ComfyExtension", "InputImpl", "io", "ui", "Progress", "check_cancel"]


def check_cancel() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel; never catch it."""
    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """The node's progress bar; every advance also honours Cancel."""

    def __init__(self, total: int):
        self._bar = comfy.utils.ProgressBar(total)

    def advance(self, amount: int = 1) -> None:
        check_cancel()
        self._bar.update(amount)
