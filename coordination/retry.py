"""Bounded retries for transient store errors (tenacity); nothing retries forever."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from .errors import OperationTimeoutError

LOG = logging.getLogger(__name__)
T = TypeVar("T")


def retrying(
    attempts: int,
    max_delay: float,
    transient: tuple[type[BaseException], ...],
    what: str = "operation",
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: retry `transient` errors with jittered exponential backoff, `attempts` times.

    When the attempts run out the last error is wrapped in `OperationTimeoutError`, naming `what`.
    """

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        policy = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=max_delay),
            retry=tenacity.retry_if_exception_type(transient),
            before_sleep=lambda state: LOG.debug(
                "%s failed (%s), retry %d/%d", what, state.outcome.exception(),
                state.attempt_number, attempts,
            ),
            reraise=False,
        )

        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return policy(func, *args, **kwargs)
            except tenacity.RetryError as exc:
                cause = exc.last_attempt.exception()
                raise OperationTimeoutError(
                    f"{what} failed after {attempts} attempts: {cause}"
                ) from cause

        return wrapper

    return decorate
