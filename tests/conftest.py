"""Fixtures shared by the tests of the offline assets (test_offline, test_publishing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.mirror import serve
from tools.offline import shared_assets

SHARED = shared_assets()


@pytest.fixture
def canonical_server(tmp_path: Path):
    """Serves the offline assets at their canonical paths, the 124M metadata included."""
    if not (SHARED / "mirror").is_dir():
        pytest.skip(f"offline assets not found at {SHARED}")
    root = tmp_path / "served"
    shutil.copytree(SHARED / "mirror", root)
    models = root / "openaipublic.blob.core.windows.net" / "gpt-2" / "models" / "124M"
    shutil.copytree(SHARED / "reference" / "openai-gpt2-124M", models)
    server, url = serve(root)
    yield url
    server.shutdown()
    server.server_close()
