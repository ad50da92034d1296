"""Test configuration for unit tests and ``pytest --nbval`` alike: the offline world.

Before any test (and before nbval starts a notebook kernel, which inherits the environment),
:func:`tools.offline.offline_environment` sets the offline profile, a local mirror of
the downloads on 127.0.0.1 built from ``../shared/assets``, and a fresh cache; the scripts that
execute the chapters use the same function.
"""

from __future__ import annotations

from tools.offline import offline_environment


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's hook signature
    offline_environment()
