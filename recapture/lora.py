"""ReCapture's two LoRAs on the SVD UNet, and SVD's image-only mode.

- ``temporal``: attention of the temporal transformer blocks (``attn1`` across frames; of ``attn2``, to
  the image embedding, only ``to_v``/``to_out``: it attends to one token, so its softmax is 1 and
  ``to_q``/``to_k`` can never learn). Trained on the anchor video with the masked loss: it learns the
  new camera's motion.
- ``spatial``: self-attention of the spatial transformer blocks. Trained on source frames with the
  temporal layers off: it learns the scene's appearance.

Only Linear layers are adapted (attention projections), which keeps the ComfyUI export one-to-one.

A trained adapter is kept, in memory and on disk, in the key format core ComfyUI's LoRA loaders apply
to a native SVD model: ``diffusion_model.<SGM module path>.lora_A.weight`` / ``.lora_B.weight`` and
``.alpha`` (scale = alpha / rank). One safetensors file per adapter, so their strengths can be set apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import types
import warnings
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from .files import atomic_path, publish_new
from .svd import unet_diffusers_to_sgm_module_path, unet_layout
from .types import TrainedLoRA

FORMAT = "recapture-lora-1"
DEFAULT_NAME = "recapture"  # file stem of a pair (pair_paths)

ADAPTERS = ("temporal", "spatial")
# peft matches string targets with re.fullmatch against module names.
TARGETS = {
    "temporal": r".*temporal_transformer_blocks\.\d+\.(attn1\.(to_q|to_k)|(attn1|attn2)\.(to_v|to_out\.0))",
    # the leading "\." keeps temporal_transformer_blocks out
    "spatial": r".*\.transformer_blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)",
}

# ComfyUI keys of the temporal cross-attention's query/key (SGM ``time_stack``), which nothing can learn
UNLEARNABLE_KEYS = re.compile(r"diffusion_model\..*\.time_stack\.\d+\.attn2\.(to_q|to_k)\.")


def inject_lora_adapters(unet: torch.nn.Module, rank: int = 16, alpha: float | None = None, seed: int = 0) -> None:
    """Adds the ``temporal`` and ``spatial`` adapters (LoRA weights in float32), both active, all frozen.

    peft draws LoRA A from the global random generator: it is drawn here from ``seed`` instead, without
    touching the caller's generator, so a training run is reproducible. peft also leaves only the last
    injected adapter active and marks adapters trainable as it activates them: both are re-activated
    frozen here, and the training chooses what trains.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not 1 <= rank <= 256:
        raise ValueError(f"LoRA rank must be between 1 and 256, got {rank}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in ADAPTERS:
            config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=TARGETS[name], lora_dropout=0.0,
                                init_lora_weights=True)
            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: intended
                warnings.simplefilter("ignore", UserWarning)
                inject_adapter_in_model(config, unet, adapter_name=name)
    for layer in lora_layers(unet):
        layer.set_adapter(list(ADAPTERS), inference_mode=True)
    for name, param in unet.named_parameters():
        param.requires_grad_(False)
        if ".lora_" in name:
            param.data = param.data.float()
    # The LoRA weights stay float32 (the optimizer updates them) but are applied in a bf16 base's dtype:
    # peft would keep a float32 copy of every LoRA input for the backward pass.
    for layer in lora_layers(unet):
        layer.cast_input_dtype_enabled = False
        for linear in [*layer.lora_A.values(), *layer.lora_B.values()]:
            linear.forward = types.MethodType(_linear_in_input_dtype, linear)


def _linear_in_input_dtype(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` computed in ``x``'s dtype; gradients still reach the float32 weight. Float16 is
    the exception: its narrow range could flush small weight gradients to zero, so it is computed in
    float32 as peft does."""
    if x.dtype == torch.float16:
        return F.linear(x.float(), linear.weight)
    return F.linear(x, linear.weight.to(x.dtype))


def lora_layers(unet: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def adapter_parameters(unet: torch.nn.Module, adapter: str) -> list[torch.nn.Parameter]:
    """The LoRA parameters of one adapter (``...lora_A.<adapter>.weight`` / ``lora_B``)."""
    return [p for n, p in unet.named_parameters() if ".lora_" in n and f".{adapter}." in n]


def set_lora_strengths(unet: torch.nn.Module, temporal: float = 1.0, spatial: float = 1.0) -> None:
    """Scales each adapter (0 switches it off); the LoRA update is ``strength * alpha / rank * B A``."""
    strengths = {"temporal": temporal, "spatial": spatial}
    for layer in lora_layers(unet):
        for adapter in layer.lora_A:
            layer.set_scale(adapter, strengths[adapter])


def remove_lora_adapters(unet: torch.nn.Module) -> None:
    """Takes both adapters out again: the UNet is the frozen base it was before injection."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(unet.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(module, child_name, child.get_base_layer())
    if hasattr(unet, "peft_config"):
        del unet.peft_config


@contextlib.contextmanager
def image_only_mode(unet: torch.nn.Module) -> Iterator[None]:
    """Switches SVD's temporal layers off: every frame is denoised on its own, as an image model.

    SVD mixes spatial and temporal branches with ``AlphaBlender``, which takes the spatial branch alone
    where ``image_only_indicator`` is 1; the UNet always passes zeros, so a forward pre-hook sets it to
    ones. Keep the training step's backward inside the block: gradient checkpointing re-runs forwards.
    """
    from diffusers.models.resnet import AlphaBlender

    def force_images(module, args, kwargs):
        indicator = kwargs.get("image_only_indicator")
        if indicator is not None:
            kwargs["image_only_indicator"] = torch.ones_like(indicator)
        return args, kwargs

    handles = [m.register_forward_pre_hook(force_images, with_kwargs=True)
               for m in unet.modules() if isinstance(m, AlphaBlender)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- Adapter weights in ComfyUI's key format ----------------------------------------------------------
def _comfy_prefix(module_name: str, layout: dict) -> str:
    """A diffusers layer path -> the prefix of its keys in ComfyUI's LoRA format."""
    return "diffusion_model." + unet_diffusers_to_sgm_module_path(module_name, **layout)


def adapter_state(unet: torch.nn.Module, adapter: str, alpha: float) -> dict[str, torch.Tensor]:
    """One adapter's weights from a peft-wrapped UNet, as ComfyUI keys (CPU, float32)."""
    layout = unet_layout(unet)
    state = {}
    for name, layer in unet.named_modules():
        if hasattr(layer, "lora_A") and adapter in layer.lora_A:
            prefix = _comfy_prefix(name, layout)
            state[f"{prefix}.lora_A.weight"] = layer.lora_A[adapter].weight.detach().float().cpu().clone()
            state[f"{prefix}.lora_B.weight"] = layer.lora_B[adapter].weight.detach().float().cpu().clone()
            state[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    return state


def load_adapter_state(unet: torch.nn.Module, adapter: str, state: dict[str, torch.Tensor]) -> None:
    """Copies ComfyUI-keyed weights into an injected adapter; every key must find its layer."""
    layout = unet_layout(unet)
    used = set()
    for name, layer in unet.named_modules():
        if hasattr(layer, "lora_A") and adapter in layer.lora_A:
            prefix = _comfy_prefix(name, layout)
            for kind in ("A", "B"):
                key = f"{prefix}.lora_{kind}.weight"
                if key not in state:
                    raise ValueError(f"the {adapter} LoRA has no weights for {prefix!r}: it was made for another "
                                     "model or another rank/target set")
                getattr(layer, f"lora_{kind}")[adapter].weight.data.copy_(state[key])
                used.add(key)
            used.add(f"{prefix}.alpha")
    unused = sorted(k for k in state if k not in used)
    if unused:
        raise ValueError(f"the {adapter} LoRA has {len(unused)} weights this UNet has no layer for (e.g. "
                         f"{unused[0]!r}): it was made for another model")


@contextlib.contextmanager
def merged_lora(unet: torch.nn.Module, states: dict[str, dict[str, torch.Tensor]],
                strengths: dict[str, float]) -> Iterator[None]:
    """Folds adapters into the base weights for the block: ``W + strength * alpha / rank * B A``.

    A merged UNet runs at the base model's speed (no extra LoRA matmuls per layer). Each merged layer
    gets a new weight tensor and the original tensor object is put back afterwards, untouched: nothing
    is subtracted again, so a half-precision base never drifts over repeated runs, and memory-mapped
    weights are never written.

    Args:
        states: adapter name (``temporal`` / ``spatial``) -> its weights in ComfyUI keys.
        strengths: adapter name -> strength; 0 leaves that adapter out.
    """
    layout = unet_layout(unet)
    originals: dict[str, tuple[torch.nn.Linear, torch.Tensor]] = {}
    used: dict[str, set[str]] = {adapter: set() for adapter in states}
    try:
        with torch.no_grad():
            for name, module in unet.named_modules():
                if not isinstance(module, torch.nn.Linear):
                    continue
                for adapter, state in states.items():
                    if not re.fullmatch(TARGETS[adapter], name):
                        continue
                    prefix = _comfy_prefix(name, layout)
                    keys = [f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight", f"{prefix}.alpha"]
                    if keys[0] not in state or keys[1] not in state:
                        raise ValueError(f"the {adapter} LoRA has no weights for {prefix!r}: it was made for "
                                         "another model or another rank/target set")
                    used[adapter].update(keys)
                    if strengths.get(adapter, 0.0) == 0.0:
                        continue
                    weight = module.weight
                    originals.setdefault(name, (module, weight.data))
                    a = state[keys[0]].to(weight.device, torch.float32)
                    b = state[keys[1]].to(weight.device, torch.float32)
                    scale = strengths[adapter] * float(state.get(keys[2], a.shape[0])) / a.shape[0]
                    weight.data = (weight.data.float() + scale * (b @ a)).to(weight.dtype)
        for adapter, state in states.items():
            unused = sorted(set(state) - used[adapter])
            if unused:
                raise ValueError(f"the {adapter} LoRA has {len(unused)} weights this UNet has no layer for (e.g. "
                                 f"{unused[0]!r}): it was made for another model")
        yield
    finally:
        for module, original in originals.values():
            module.weight.data = original


def save_lora_file(path: str | os.PathLike, state: dict[str, torch.Tensor], adapter: str, rank: int, alpha: float,
                   settings: dict | None = None) -> Path:
    """Writes one adapter as safetensors (atomically, replacing ``path``) with what made it in the metadata."""
    with atomic_path(path) as tmp:
        _write_lora(tmp, state, adapter, rank, alpha, settings)
    return Path(path)


def _write_lora(path: Path, state: dict[str, torch.Tensor], adapter: str, rank: int, alpha: float,
                settings: dict | None) -> None:
    from safetensors.torch import save_file

    metadata = {"format": FORMAT, "recapture.adapter": adapter, "recapture.rank": str(rank),
                "recapture.alpha": str(alpha), "recapture.targets": TARGETS[adapter],
                "recapture.settings": json.dumps(settings or {}), "modelspec.architecture": "stable-video-diffusion/lora"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)


def load_lora_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads a LoRA file for SVD (safetensors only): its weights and metadata.

    Files of this pack carry their adapter name and rank; other SVD LoRAs in the same key format are
    accepted when their keys sit on SVD's attention layers.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path.name}: only .safetensors LoRA files are loaded (never pickled .pt/.ckpt/.bin)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read {path.name} as safetensors: {e}") from e
    lora_keys = [k for k in state if any(m in k for m in (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up."))]
    if not lora_keys:
        raise ValueError(f"{path.name} holds no LoRA weights (no lora_A/lora_B keys): is it a full model?")
    foreign = [k for k in lora_keys if not k.startswith("diffusion_model.") or "time_stack" not in k
               and ".transformer_blocks." not in k]
    if foreign:
        raise ValueError(f"{path.name} is not a LoRA for Stable Video Diffusion (e.g. key {foreign[0]!r}); use one "
                         "made by ReCapture's training")
    return state, metadata


def apply_lora(unet: torch.nn.Module, lora: TrainedLoRA, temporal: float = 1.0, spatial: float = 1.0) -> None:
    """Injects trained adapters into a UNet as adapter layers with the given strengths (sampling merges
    them instead, see ``merged_lora``); ``remove_lora_adapters`` takes them out again."""
    inject_lora_adapters(unet, lora.rank, lora.alpha)
    try:
        load_adapter_state(unet, "temporal", lora.temporal)
        load_adapter_state(unet, "spatial", lora.spatial)
    except ValueError:
        remove_lora_adapters(unet)
        raise
    set_lora_strengths(unet, temporal, spatial)


def lora_pair(temporal: dict[str, torch.Tensor], spatial: dict[str, torch.Tensor],
              settings: dict | None = None) -> TrainedLoRA:
    """A ``TrainedLoRA`` from two adapters' weights (rank from the weights, alpha from ``.alpha``) and
    the training settings stored with them. Weights for the temporal ``attn2.to_q/to_k`` (in files from
    before they were left out, see ``TARGETS``) are dropped: they cannot change the UNet's output."""
    temporal = {k: v for k, v in temporal.items() if not UNLEARNABLE_KEYS.match(k)}
    rank_alpha = set()
    for state in (temporal, spatial):
        a_key = next((k for k in state if k.endswith(".lora_A.weight")), None)
        if a_key is None:
            raise ValueError("a LoRA file without lora_A weights")
        alpha = state.get(a_key.replace(".lora_A.weight", ".alpha"))
        rank = state[a_key].shape[0]
        rank_alpha.add((rank, float(alpha) if alpha is not None else float(rank)))
    if len(rank_alpha) != 1:
        raise ValueError(f"the temporal and spatial LoRA differ in rank/alpha {sorted(rank_alpha)}: load a pair "
                         "saved by the same training")
    rank, alpha = rank_alpha.pop()
    return TrainedLoRA(temporal=temporal, spatial=spatial, rank=rank, alpha=alpha, config=settings or {})


def load_lora_pair(temporal_path: str | os.PathLike, spatial_path: str | os.PathLike) -> TrainedLoRA:
    """The two files of one training -> a ``TrainedLoRA`` with the settings their metadata records."""
    (t_state, t_meta), (s_state, s_meta) = load_lora_file(temporal_path), load_lora_file(spatial_path)
    for path, meta, wanted in ((temporal_path, t_meta, "temporal"), (spatial_path, s_meta, "spatial")):
        if meta.get("recapture.adapter", wanted) != wanted:
            raise ValueError(f"{Path(path).name} is a {meta['recapture.adapter']} LoRA, not a {wanted} one: "
                             "swap the two files")
    try:
        settings = json.loads(t_meta.get("recapture.settings", "{}"))
    except json.JSONDecodeError:
        settings = {}
    return lora_pair(t_state, s_state, settings if isinstance(settings, dict) else {})


def pair_paths(folder: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Where a pair's files go: adapter -> ``folder/<stem>_<adapter>.safetensors``."""
    return {adapter: Path(folder) / f"{stem}_{adapter}.safetensors" for adapter in ADAPTERS}


def save_lora_pair(folder: str | os.PathLike, stem: str, lora: TrainedLoRA, settings: dict | None = None) -> list[Path]:
    """Writes the pair's two files (``pair_paths``) with the training's settings (and ``settings``) in their
    metadata; returns their paths.

    An existing file is never replaced, not even one that appeared while the pair was being trained or
    written (another training saving under the same name): the pair then goes to ``<stem>_2``,
    ``<stem>_3``... (the first numbers whose two names are both free), and the paths say where."""
    def write(temporaries: list[Path]) -> None:
        for adapter, tmp in zip(ADAPTERS, temporaries):
            _write_lora(tmp, getattr(lora, adapter), adapter, lora.rank, lora.alpha, lora.config | (settings or {}))

    def names(n: int) -> list[Path]:
        return list(pair_paths(folder, stem if n == 1 else f"{stem}_{n}").values())

    return publish_new(write, names)
