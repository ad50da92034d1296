"""The offline world: where the tests, the chapter executor, the rehearsal and the GPU check run.

No download leaves the machine there.

The library reads canonical URLs and knows nothing of a checkout's ``../shared``;
:func:`offline_environment` points it there. Where there is none (a fresh clone), the assets
are fetched first, from their canonical URLs, into ``build/assets`` and checked against their
sha256 (:mod:`tools.assets`); on such a machine ``GPT2LIB_MIRROR``, if set, is where
they are fetched from, and is then replaced by the local mirror. It sets, unless already set:

- ``GPT2LIB_PROFILE=offline``: the small, fast profile of every chapter;
- ``GPT2LIB_MIRROR``: a local mirror built from :func:`shared_assets` ``/ "mirror"`` plus the
  checkpoints the project makes itself (the random stand-ins), served over
  HTTP on 127.0.0.1, so downloads take the same code path as online;
- ``GPT2LIB_HOME`` and ``TIKTOKEN_CACHE_DIR``: a fresh cache for this process, so every
  download really happens;
- ``TQDM_DISABLE=1``: progress bars are timings, not results, and stay out of compared outputs.

A notebook kernel started afterwards inherits the environment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the checkout
KEYS = (
    "GPT2LIB_PROFILE",
    "GPT2LIB_MIRROR",
    "GPT2LIB_HOME",
    "TIKTOKEN_CACHE_DIR",
    "TQDM_DISABLE",
    "TF_CPP_MIN_LOG_LEVEL",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)

_server = None  # keeps the mirror's HTTP server alive for the whole process


def _assets_folder() -> tuple[Path, bool]:
    """The assets folder, and whether it is ours to fetch (neither given nor beside)."""
    if os.environ.get("GPT2LIB_ASSETS"):
        return Path(os.environ["GPT2LIB_ASSETS"]), False
    beside = REPO.parent / "shared" / "assets"
    if (beside / "mirror").is_dir():
        return beside, False
    return REPO / "build" / "assets", True


def shared_assets() -> Path:
    """The folder holding the offline assets' ``mirror/``: ``$GPT2LIB_ASSETS``, else
    ``../shared/assets`` beside the checkout, else ``build/assets`` in it (fetched on first use
    by :func:`offline_environment`)."""
    return _assets_folder()[0]


def offline_environment(mirror_build: Path | None = None) -> dict[str, str]:
    """Set up (once per process) and return the environment variables of the offline world.

    ``mirror_build``: where the local mirror is built (default ``build/mirror`` in the checkout).
    """
    global _server
    folder, ours = _assets_folder()
    if ours:
        from .assets import COMPLETE, fetch_assets

        if not (folder / COMPLETE).is_file():
            print(f"offline assets: fetching them from their canonical URLs into {folder}")
            fetch_assets(folder)
        os.environ.pop("GPT2LIB_MIRROR", None)  # it served the fetch; the local mirror serves now
    source = folder / "mirror"
    if not source.is_dir():
        raise RuntimeError(
            f"offline assets not found at {source}: set GPT2LIB_ASSETS to the folder holding "
            "`mirror/`, or unset it to fetch them"
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
        from .mirror import build_mirror, serve

        build = mirror_build or REPO / "build" / "mirror"
        build_mirror(build, source=source)
        _server, base_url = serve(build)
        os.environ["GPT2LIB_MIRROR"] = base_url
    return {k: os.environ[k] for k in KEYS if k in os.environ}
