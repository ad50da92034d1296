"""Test configuration for unit tests and ``pytest --nbval`` alike: the offline world.

The library reads canonical URLs and knows nothing of this checkout's ``../shared``; this file
points it there. Before any test (and before nbval starts a notebook kernel, which inherits the
environment) it sets:

- ``GPT2LIB_PROFILE=offline`` unless already set: the small, fast profile of every chapter;
- ``GPT2LIB_MIRROR``: a local mirror built from ``../shared/assets/mirror`` plus the checkpoints
  the project makes itself (the random stand-in and the mini GPT-2), served over HTTP on
  127.0.0.1, so downloads take the same code path as online;
- ``GPT2LIB_HOME`` and ``TIKTOKEN_CACHE_DIR``: a fresh cache for this session, so every download
  really happens;
- ``TQDM_DISABLE=1``: progress bars are timings, not results, and stay out of compared outputs.

``scripts/execute_notebooks.py`` uses :func:`offline_environment` to execute the chapters in the
very environment nbval checks them in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED_ASSETS = Path(os.environ.get("GPT2LIB_ASSETS", ROOT.parent / "shared" / "assets"))
MIRROR_BUILD = ROOT / "build" / "mirror"

_server = None  # keeps the mirror's HTTP server alive for the whole session


def offline_environment() -> dict[str, str]:
    """Set up (once) and return the environment variables of the offline world."""
    global _server
    source = SHARED_ASSETS / "mirror"
    if not source.is_dir():
        raise RuntimeError(
            f"offline assets not found at {source}: clone this repository next to `shared/`, "
            "or set GPT2LIB_ASSETS to the folder holding `mirror/`"
        )
    os.environ.setdefault("GPT2LIB_PROFILE", "offline")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "GPT2LIB_HOME" not in os.environ:
        home = Path(tempfile.mkdtemp(prefix="gpt2lib-home-"))
        os.environ["GPT2LIB_HOME"] = str(home)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(home / "tiktoken")
    if "GPT2LIB_MIRROR" not in os.environ:
        from gpt2lib.testing.mirror import build_mirror, serve

        build_mirror(MIRROR_BUILD, source=source)
        _server, base_url = serve(MIRROR_BUILD)
        os.environ["GPT2LIB_MIRROR"] = base_url
    keys = (
        "GPT2LIB_PROFILE",
        "GPT2LIB_MIRROR",
        "GPT2LIB_HOME",
        "TIKTOKEN_CACHE_DIR",
        "TQDM_DISABLE",
        "TF_CPP_MIN_LOG_LEVEL",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    )
    return {k: os.environ[k] for k in keys if k in os.environ}


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's hook signature
    offline_environment()
