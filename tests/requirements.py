"""Skip a test whose server is missing, except under CI, where a missing server is a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Skip locally; fail under CI=true so the backend matrix never goes silently empty."""
    if IN_CI:
        pytest.fail(f"required for CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found (Debian package {package}; run `make setup`)")
    return path  # type: ignore[return-value]


def require_file(path: str, package: str) -> str:
    if not Path(path).exists():
        missing(f"{path} not found (Debian package {package}; run `make setup`)")
    return path
