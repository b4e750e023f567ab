"""Skip a test whose server or framework is missing, except under CI, where it is a failure.

One rule for the whole suite, so the backend matrix never goes silently empty in CI.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when the environment variable CI is ``true`` (as CI systems set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str) -> None:
    """Skip locally; fail under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing requirement is an error, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """The path of binary/file `name`, or skip (fail under CI) naming the Debian package.

    `name` is a command looked up on PATH (and the sbin dirs) or an absolute file path.
    """
    if os.path.isabs(name):
        found = name if os.path.exists(name) else None
    else:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if not found:
        missing(f"{name} not found: install the Debian package '{package}' (`make setup`)")
    return found  # type: ignore[return-value]
