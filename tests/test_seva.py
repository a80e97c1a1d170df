"""Stable Virtual Camera's denoiser (recapture/seva.py) proven without its weights: the full-size module tree
has the official checkpoint's names and shapes, and a tiny random model matches the reference
implementation's outputs.

How ``tests/data/seva_tiny_parity.safetensors`` was made (once; the script imports the reference, which is
under a non-commercial licence, so it stays outside this repository):

- Reference: github.com/Stability-AI/stable-virtual-camera at commit
  ``fe19948e9b7bea261ab2db780a59656131404a83``; its ``seva/model.py``, ``seva/modules/layers.py`` and
  ``seva/modules/transformer.py`` extracted with ``git show <commit>:<path>`` into ``/tmp/seva_ref``.
- Command: ``~/.cache/comfyui-recapture-dev/venv/bin/python /tmp/seva_work/make_parity_fixture.py
  tests/data/seva_tiny_parity.safetensors`` (torch 2.15 CPU, float32, under ``torch.no_grad``).
- The script builds the reference ``Seva(SevaParams(**tiny))`` with the tiny configuration stored in the
  file's metadata (``config``; equal to ``tiny_seva_config()``) after ``torch.manual_seed(0)`` (PyTorch's
  default initialisations), then sets every GroupNorm / LayerNorm weight to ``1 + 0.25 N(0, 1)`` and bias
  to ``0.25 N(0, 1)`` from ``torch.Generator().manual_seed(1)``, visiting the parameter names in sorted
  order, so that no norm is the identity. It checks that every parameter gets a non-zero gradient and
  that view 0's output depends on view 1's input.
- Inputs from ``torch.Generator().manual_seed(2)``, drawn in this order, all N(0, 1) float32:
  ``x_a`` and ``x_b`` (4, 11, 32, 32), ``context`` (4, 1, 32) (a different context per view, so which
  view's context each block uses matters), ``plucker`` (4, 6, 32, 32).
- Three calls of the reference's ``forward(x, t, y, dense_y, num_frames)``:
  ``a``: ``x_a``, ``t_a = [999, 999, 250, 250]``, 2 scenes of 2 views; ``b``: ``x_b``,
  ``t_b = [500, 500, 0, 0]``, 2 scenes of 2 views; ``c``: the first 3 rows of ``x_a``, ``context`` and
  ``plucker``, ``t_c = [37, 37, 37]``, 1 scene of 3 views. Outputs ``out_a``, ``out_b``, ``out_c``.
- Saved: the 328 weights as ``model.<name>``, the inputs and outputs under the names above; metadata
  ``config`` (JSON), ``commit``, ``repository`` and ``how``. 4.8 MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from recapture.seva import SevaConfig, SevaUNet, build_seva_unet, tiny_seva_config

DATA = Path(__file__).parent / "data"
OFFICIAL_NAMES = DATA / "seva_v1_1_state_dict.json"
PARITY = DATA / "seva_tiny_parity.safetensors"
REFERENCE_COMMIT = "fe19948e9b7bea261ab2db780a59656131404a83"
CALLS = {"a": ("x_a", 4, 2), "b": ("x_b", 4, 2), "c": ("x_a", 3, 3)}  # input, rows, views


def official_shapes() -> dict[str, list[int]]:
    return {k: v for k, v in json.loads(OFFICIAL_NAMES.read_text()).items() if not k.startswith("_")}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    return ((ours.float() - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def parity():
    with safe_open(str(PARITY), "pt") as f:
        metadata = f.metadata()
    return load_file(PARITY), metadata


@pytest.fixture(scope="module")
def tiny(parity):
    """Our model at the fixture's configuration with the reference's random weights (strict keys)."""
    tensors, metadata = parity
    model = SevaUNet(SevaConfig.from_dict(json.loads(metadata["config"]))).eval()
    weights = {name.removeprefix("model."): value for name, value in tensors.items() if name.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    return model


def call(model: SevaUNet, tensors: dict, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    source, rows, views = CALLS[name]
    with torch.no_grad():
        return model(tensors[source][:rows].to(dtype), tensors[f"t_{name}"], tensors["context"][:rows].to(dtype),
                     tensors["plucker"][:rows].to(dtype), num_views=views)


def test_the_full_model_has_the_official_checkpoints_names_shapes_and_size():
    model = build_seva_unet(device="meta")
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    official = official_shapes()
    assert sorted(set(official) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(official)) == []  # extra
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert len(ours) == 1146
    assert sum(p.numel() for p in model.parameters()) == 1_263_968_004
    assert list(model.buffers()) == []


def test_a_checkpoint_with_those_names_loads_with_strict_keys_and_keeps_its_dtype():
    model = build_seva_unet(device="meta")
    checkpoint = {name: torch.empty(shape, dtype=torch.bfloat16, device="meta")
                  for name, shape in official_shapes().items()}
    result = model.load_state_dict(checkpoint, strict=True, assign=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.dtype == torch.bfloat16


def test_the_default_configuration_is_the_references():
    """The reference configuration recorded with the name list (``SevaParams()`` at the pinned commit)."""
    source = json.loads(OFFICIAL_NAMES.read_text())["_source"]
    assert source["commit"] == REFERENCE_COMMIT
    recorded = json.loads(source["config"].removeprefix("SevaParams() defaults: "))
    assert SevaConfig().to_dict() == recorded
    assert SevaConfig.from_dict(recorded) == SevaConfig()


def test_the_fixture_was_made_by_the_pinned_reference_at_the_tiny_configuration(parity):
    tensors, metadata = parity
    assert metadata["commit"] == REFERENCE_COMMIT
    assert SevaConfig.from_dict(json.loads(metadata["config"])) == tiny_seva_config()
    assert sum(v.numel() for k, v in tensors.items() if k.startswith("model.")) == 1_032_804


@pytest.mark.parametrize("name", sorted(CALLS))
def test_one_denoiser_call_matches_the_reference(tiny, parity, name):
    """Calls a and b: 2 scenes of 2 views at timesteps 999/250 and 500/0; call c: 1 scene of 3 views
    (the number of views is a forward argument, the weights are the same)."""
    tensors, _ = parity
    out = call(tiny, tensors, name)
    reference = tensors[f"out_{name}"]
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert relative_error(out, reference) < 1e-4


def test_a_bfloat16_model_runs_on_the_cpu_close_to_float32(tiny, parity):
    """bf16 weights and inputs without autocast (the time embedding is made in float32 and cast)."""
    tensors, _ = parity
    model = SevaUNet(tiny.config).to(torch.bfloat16).eval()
    model.load_state_dict(tiny.state_dict())
    out = call(model, tensors, "a", torch.bfloat16)
    assert out.dtype == torch.bfloat16 and bool(out.isfinite().all())
    assert relative_error(out, tensors["out_a"]) < 5e-2


def test_chunked_attention_gives_the_same_result(tiny, parity):
    tensors, _ = parity
    x, t, context, plucker = (tensors[k][:2, ..., :16, :16] if tensors[k].ndim == 4 else tensors[k][:2]
                              for k in ("x_a", "t_a", "context", "plucker"))
    with torch.no_grad():
        whole = tiny(x, t, context, plucker, num_views=2)
        tiny.set_attention_chunk(100)  # 512 joint tokens at ds1 -> 6 pieces
        try:
            pieces = tiny(x, t, context, plucker, num_views=2)
        finally:
            tiny.set_attention_chunk(None)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-6)


def test_wrong_inputs_are_named():
    model = build_seva_unet(tiny_seva_config(), device="meta")
    x, t = torch.zeros(3, 11, 32, 32, device="meta"), torch.zeros(3, device="meta")
    context, plucker = torch.zeros(3, 1, 32, device="meta"), torch.zeros(3, 6, 32, 32, device="meta")
    with pytest.raises(ValueError, match="not a whole number of scenes of 2 views"):
        model(x, t, context, plucker, num_views=2)
    with pytest.raises(ValueError, match="multiples of 2"):
        model(x[..., :31], t, context, plucker[..., :31], num_views=3)
    with pytest.raises(ValueError, match="plucker must have shape"):
        model(x, t, context, plucker[:, :5], num_views=3)
