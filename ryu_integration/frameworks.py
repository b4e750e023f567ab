"""Which framework to run (Ryu or os-ken), decided without importing either.

Kept apart from `compat` (which imports the chosen framework) because the launcher must decide,
and monkey-patch for eventlet if needed, before anything imports a framework.
"""

from __future__ import annotations

import importlib.util
import os

#: Environment variable naming the framework (`ryu` or `os-ken`).
ENV_VAR = "COORD_FRAMEWORK"
RYU = "ryu"
OS_KEN = "os-ken"
FRAMEWORKS = (RYU, OS_KEN)
#: Top-level package of each framework.
PACKAGES = {RYU: "ryu", OS_KEN: "os_ken"}
_ALIASES = {"ryu": RYU, "os-ken": OS_KEN, "os_ken": OS_KEN, "osken": OS_KEN}


class FrameworkError(RuntimeError):
    """The requested framework is unknown or not installed."""


def normalise(name: str) -> str:
    """`ryu` / `os-ken` from any accepted spelling; FrameworkError otherwise."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise FrameworkError(f"unknown framework {name!r}; choose one of {', '.join(FRAMEWORKS)}")
    return _ALIASES[key]


def installed(name: str) -> bool:
    """Whether a framework's package can be imported (without importing it)."""
    return importlib.util.find_spec(PACKAGES[normalise(name)]) is not None


def choose(requested: str | None = None) -> str:
    """Resolve the framework: `requested`, then `$COORD_FRAMEWORK`, then ryu if installed, then
    os-ken. Ryu first because the drop-in story is "replace ryu-manager by coord-manager": who
    has Ryu installed runs Ryu apps, which import `ryu.*` and would not run under os-ken."""
    name = (requested or os.environ.get(ENV_VAR, "")).strip()
    if name:
        framework = normalise(name)
        if not installed(framework):
            hint = ("pip install --build-constraint constraints/ryu-build.txt ryu==4.34"
                    if framework == RYU else "pip install os-ken")
            raise FrameworkError(
                f"framework {framework!r} was requested but is not installed ({hint})")
        return framework
    for framework in FRAMEWORKS:
        if installed(framework):
            return framework
    raise FrameworkError("neither ryu nor os-ken is installed; install one (see docs/ryu.md)")


def wants_eventlet(framework: str) -> bool:
    """Whether the framework will run on eventlet: Ryu always; os-ken only with
    `OSKEN_HUB_TYPE=eventlet` (its default hub is native threads)."""
    if normalise(framework) == RYU:
        return os.environ.get("RYU_HUB_TYPE", "eventlet") == "eventlet"
    return os.environ.get("OSKEN_HUB_TYPE", "native") == "eventlet"
