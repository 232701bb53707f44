"""Finding system tools (prometheus, promtool): skip outside CI, fail in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def tool(name: str) -> str:
    """The path of ``name``; a skip with the reason when it is missing, a failure under ``CI=true``."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not installed (apt-get install prometheus; .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
