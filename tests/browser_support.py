"""Helpers shared by the browser tests: screenshots kept as test artifacts, the axe-core check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
AXE_JS = Path(os.environ.get("AXE_CORE_JS", ROOT / ".venv" / "npm" / "node_modules" / "axe-core" / "axe.min.js"))


def screenshot(b: Any, name: str) -> Path:
    """Save a screenshot of the current page as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    b.d.save_screenshot(str(path))
    return path


def axe(b: Any) -> None:
    """axe-core on the current page: no serious or critical violation."""
    if not AXE_JS.exists():
        msg = f"axe-core not found at {AXE_JS} (make installs it with npm)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    b.d.execute_script(AXE_JS.read_text(encoding="utf-8"))
    result = b.d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(JSON.stringify(r.violations)))"
    )
    bad = [v for v in json.loads(result) if v.get("impact") in ("serious", "critical")]
    assert not bad, [(v["id"], v["help"], [n["target"] for n in v["nodes"][:3]]) for v in bad]
