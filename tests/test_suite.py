"""The test suite's own rules: the tiers select by markers (checked for every test at collection, in
conftest.py), the library tier collects without the browser tools or ComfyUI, and test modules share
fixtures and helpers through conftest.py and browser_pages.py only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
UNIT_TIER = "not comfy and not comfy_code and not browser"  # the Makefile's test-unit


def module_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not those imported inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_test_modules_import_no_other_test_module_and_no_browser_tools():
    problems = []
    for path in sorted(TESTS.glob("*.py")):
        for name in module_level_imports(path):
            top = name.split(".")[0]
            if top.startswith("test_"):
                problems.append(f"{path.name} imports {name}: move what it shares to conftest.py or browser_pages.py")
            if top == "playwright":
                problems.append(f"{path.name} imports {name} at module level: import it inside the browser test")
    assert problems == []


def test_the_library_tier_collects_without_playwright_or_comfyui():
    """As in a venv without the browser tools and without ComfyUI on the path."""
    blocked = ("playwright", "comfy", "comfy_api", "comfy_extras", "folder_paths")
    code = ("import sys\n"
            f"sys.modules.update(dict.fromkeys({blocked!r}))\n"  # None: importing them fails
            "import pytest\n"
            "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q', '--collect-only', "
            f"'-m', {UNIT_TIER!r}, {str(TESTS)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=TESTS.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]  # a module that fails to import: 2
    assert "tests collected" in done.stdout, done.stdout[-500:]
