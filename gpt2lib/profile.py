"""The one switch between the book's real settings and a small, fast offline profile.

``GPT2LIB_PROFILE=full`` (the default) runs every chapter with the book's settings and the real
GPT-2 weights; ``GPT2LIB_PROFILE=offline`` runs the same code small enough for a 2-core CPU with
no internet (the test suite and CI set it). Chapters read it in their settings cell, through
:func:`get_profile` or :func:`choose`.

A *rehearsal* (``scripts/rehearse.py``) executes the full profile end to end in CI, on random
stand-ins at the real model sizes, with its loop counts capped. The caps are settings like any
other: a chapter reads them once, in its settings cell, through :func:`loop_caps`, and passes
the capped counts to the library as arguments. No library function reads this module; each
does exactly what its arguments say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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

REHEARSAL_ENV = "GPT2LIB_REHEARSAL"  # set to 1 by scripts/rehearse.py, nowhere else


@dataclass(frozen=True)
class LoopCaps:
    """Upper bounds on a chapter's loop counts; None: no bound.

    ``steps``: optimizer steps of a training run; ``batches``: batches of an evaluation pass;
    ``new_tokens``: tokens of a generation. ``caps.limit(count, "batches")`` is ``count`` under
    the bound (``None``, "all of them", becomes the bound itself).
    """

    steps: int | None = None
    batches: int | None = None
    new_tokens: int | None = None

    def limit(self, count: int | None, what: Literal["steps", "batches", "new_tokens"]) -> int | None:
        bound = getattr(self, what)
        if bound is None:
            return count
        return bound if count is None else min(count, bound)


NO_CAPS = LoopCaps()
REHEARSAL_CAPS = LoopCaps(steps=2, batches=2, new_tokens=4)


def loop_caps() -> LoopCaps:
    """:data:`REHEARSAL_CAPS` in a rehearsal (``GPT2LIB_REHEARSAL=1``), :data:`NO_CAPS` otherwise.

    For a chapter's settings cell: the code path, the model sizes and every other setting stay
    the profile's; only the loop counts the chapter passes on are bounded.
    """
    rehearsing = os.environ.get(REHEARSAL_ENV, "").strip() not in ("", "0")
    return REHEARSAL_CAPS if rehearsing else NO_CAPS
