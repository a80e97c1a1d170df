"""What README.md tells a ComfyUI user about installing the pack is true today (it is not published:
no public repository, not in the Comfy Registry nor in ComfyUI-Manager), pyproject.toml holds what the
Comfy Registry needs to publish it (its pyproject.toml specification, as comfy-cli reads it), and the
shipped workflows' notes speak to ComfyUI users (no development commands)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# routes that exist only once the pack is published
PUBLISHED_ONLY = re.compile(r"ComfyUI-Manager|comfy node install|Comfy Registry|registry\.comfy\.org", re.I)


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def install_section() -> str:
    match = re.search(r"^## Install.*?(?=^## )", README, re.S | re.M)
    assert match, "README.md has no Install section"
    return match.group(0)


def pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_readme_names_no_repository_url_or_clone():
    assert "git clone" not in README
    assert not re.findall(r"https?://(?:www\.)?(?:github|gitlab)\.com/[^)\s]*recapture", README, re.I)


def test_readme_names_registry_and_manager_only_as_once_published():
    claims = [p for p in paragraphs(README) if PUBLISHED_ONLY.search(p)]
    assert claims, "the README no longer says how the pack will install once published"
    assert [p for p in claims if "once published" not in p.lower()] == []


def test_install_section_says_how_to_install_today():
    section = install_section()
    assert "custom_nodes" in section and "pip install -r requirements.txt" in section
    assert "ComfyUI's own Python" in section
    assert re.search(r"checkout or an archive", section)


def test_pyproject_has_what_the_comfy_registry_needs():
    data = pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    # the node id: letters, digits and single - _ . between them, starting with a letter, under 100 characters
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"].strip() and project["license"]
    assert project["urls"]["Repository"].startswith("https://")  # required by the registry
    assert re.fullmatch(r"[a-z][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"].strip()
    assert comfy["Icon"] == "" or re.fullmatch(r"https://\S+\.(?:png|jpg|jpeg|svg|webp|gif)", comfy["Icon"])
    assert isinstance(comfy["includes"], list)
    assert re.fullmatch(r"[<>=!~]=?\s*\d+\.\d+\.\d+", comfy["requires-comfyui"])
    valid = ("Operating System :: OS Independent", "Operating System :: POSIX", "Operating System :: Microsoft",
             "Operating System :: MacOS", "Environment :: GPU :: NVIDIA CUDA", "Environment :: GPU :: AMD ROCm",
             "Environment :: GPU :: Intel Arc", "Environment :: NPU :: Huawei Ascend", "Environment :: GPU :: Apple Metal")
    assert set(project.get("classifiers", [])) <= set(valid)


def test_pyproject_dependencies_are_requirements_txt():
    """Installing from a checkout reads requirements.txt, the registry reads pyproject: the same list."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    assert sorted(pyproject()["project"]["dependencies"]) == sorted(requirements)
    assert not [r for r in requirements if re.match(r"torch(vision|audio)?\b", r)]  # ComfyUI owns torch


def test_workflow_notes_give_comfyui_users_the_sample_command_not_make():
    import json

    for path in sorted((REPO / "workflows").glob("*.json")):
        notes = [v for n in json.loads(path.read_text())["nodes"] if n["type"] in ("Note", "MarkdownNote")
                 for v in n.get("widgets_values", []) if isinstance(v, str)]
        assert notes, path.name
        text = "\n".join(notes)
        assert "make " not in text, path.name
        assert "python -m recapture demo-sample --out" in text, path.name
