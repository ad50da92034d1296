"""The one switch between the book's real settings and a small, fast offline profile.

``GPT2LIB_PROFILE=full`` (the default) runs every chapter with the book's settings and the real
GPT-2 weights; ``GPT2LIB_PROFILE=offline`` runs the same code small enough for a 2-core CPU with
no internet (the test suite and CI set it). Chapters read it through :func:`get_profile` or
:func:`choose`; nothing else in the library looks at the environment to guess where it runs.

``GPT2LIB_REHEARSAL=1`` (set by ``scripts/rehearse.py`` only) caps the loop counts of a run
(:data:`REHEARSAL_CAPS`), so that the full profile can be executed end to end in CI on random
stand-ins at the real model sizes.
"""

from __future__ import annotations

import os
from typing import Literal, TypeVar

Profile = Literal["full", "offline"]
PROFILES: tuple[Profile, ...] = ("full", "offline")
T = TypeVar("T")


def get_profile() -> Profile:
    """The active profile, from ``GPT2LIB_PROFILE`` (default ``"full"``)."""
    value = os.environ.get("GPT2LIB_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ValueError(f"GPT2LIB_PROFILE={value!r} is not a profile; choose one of {PROFILES}")
    return value  # type: ignore[return-value]


def choose(full: T, offline: T) -> T:
    """Pick the value for the active profile: ``choose(full=10, offline=1)``."""
    return full if get_profile() == "full" else offline


# --- the rehearsal of the full profile ------------------------------------------------------

REHEARSAL_ENV = "GPT2LIB_REHEARSAL"
# what a rehearsal caps (scripts/rehearse.py): optimizer steps of a training run, batches of an
# evaluation pass, new tokens of a generation. Nothing else changes: the code path, the model
# sizes and the settings are the full profile's.
REHEARSAL_CAPS = {"steps": 2, "batches": 2, "new_tokens": 4}


def rehearsal() -> bool:
    """Whether this is a rehearsal run (``GPT2LIB_REHEARSAL=1``): loop counts are capped."""
    return os.environ.get(REHEARSAL_ENV, "").strip() not in ("", "0")


def rehearsal_cap(count: int | None, what: str) -> int | None:
    """``count`` capped at ``REHEARSAL_CAPS[what]`` in a rehearsal (``None``: "all" is capped too);
    ``count`` itself otherwise."""
    if not rehearsal():
        return count
    cap = REHEARSAL_CAPS[what]
    return cap if count is None else min(count, cap)
