"""What the commands share: the client options, and running a command.

Every command that talks to the API takes the same four options; they are
declared once here (`client_options`) and reach the command as one
`ClientOptions`. `run` turns a command's errors into one line and an exit
code (`describe`). Nothing here imports a command: the commands import this
module, and ``_main`` imports the commands.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import attrs
import click

from .._client import AsyncViberClient
from .._constants import ACCESS_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._errors import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    OutcomeUnknownError,
    StatusTimeoutError,
    ValidationError,
)
from .._retry import RetryPolicy
from ._exit import ExitCode


__all__ = ["ClientOptions", "client_options", "describe", "run"]

R = TypeVar("R")

# The SDK's own default, so that `--attempts` cannot drift from it.
_DEFAULT_ATTEMPTS = RetryPolicy().attempts


@attrs.frozen
class ClientOptions:
    """The options of every command that talks to the API.

    Attributes:
        access_key: ``--access-key`` (or its environment variable); None
            lets the client say that it is missing.
        base_url: ``--base-url``: the API root.
        allow_insecure_http: ``--allow-insecure-http``.
        attempts: ``--attempts``: attempts per request (1 = no retries).
    """

    # Kept out of the repr: a traceback (--debug) or a log line that shows
    # the options must not show the key.
    access_key: str | None = attrs.field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    allow_insecure_http: bool = False
    attempts: int = _DEFAULT_ATTEMPTS

    def client(self, **options: Any) -> AsyncViberClient:
        """A client from these options (raises `ConfigurationError` clearly).

        Args:
            **options: More `AsyncViberClient` arguments (``rate_limit``...).
        """
        return AsyncViberClient(
            self.access_key,
            base_url=self.base_url,
            allow_insecure_http=self.allow_insecure_http,
            retry=RetryPolicy(attempts=self.attempts),
            **options,
        )


# In the order --help lists them.
_OPTIONS = (
    click.option(
        "--access-key",
        envvar=ACCESS_KEY_ENV,
        show_envvar=True,
        help="Your DecisionTelecom access key.",
    ),
    click.option(
        "--base-url",
        envvar=BASE_URL_ENV,
        show_envvar=True,
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="API root (point it at the sandbox or a proxy).",
    ),
    click.option(
        "--allow-insecure-http",
        is_flag=True,
        help="Allow an http:// base URL that is not loopback (the key then "
        "travels in clear text).",
    ),
    click.option(
        "--attempts",
        default=_DEFAULT_ATTEMPTS,
        show_default=True,
        type=click.IntRange(1, 20),
        help="Attempts per request (1 = no retries).",
    ),
)


def client_options(command: Callable[..., R]) -> Callable[..., R]:
    """Give *command* the client options, passed as one `ClientOptions`.

    Put it where the options belong in ``--help`` (above the command's own
    options, below `click.command`). *command* receives the `ClientOptions`
    first (after the context, with `click.pass_context` below it), and none
    of the four options as keywords.
    """

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> R:
        options = ClientOptions(
            access_key=kwargs.pop("access_key"),
            base_url=kwargs.pop("base_url"),
            allow_insecure_http=kwargs.pop("allow_insecure_http"),
            attempts=kwargs.pop("attempts"),
        )
        return command(options, *args, **kwargs)

    # Decorators apply bottom-up: the last one applied is listed first.
    decorated: Callable[..., R] = with_options
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


# The SDK's errors name its Python API; the command line's name its flags.
_FLAGS = (
    ("pass AsyncViberClient(access_key=...)", "pass --access-key"),
    ("allow_insecure_http=True", "--allow-insecure-http"),
    ("base_url", f"--base-url ({BASE_URL_ENV})"),
)


def _in_flags(text: str) -> str:
    for python, flag in _FLAGS:
        text = text.replace(python, flag)
    return text


def describe(error: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for an error."""
    if isinstance(error, ConfigurationError):
        return ExitCode.CONFIGURATION, _in_flags(str(error))
    if isinstance(error, ValidationError):
        return ExitCode.INVALID, f"invalid message: {error}"
    if isinstance(error, StatusTimeoutError):
        return ExitCode.TIMEOUT, str(error)
    if isinstance(error, OutcomeUnknownError):
        return ExitCode.OUTCOME_UNKNOWN, (
            f"{error}; check its status before sending it again"
        )
    if isinstance(error, APIError):
        return ExitCode.REFUSED, f"the API refused the request: {error}"
    if isinstance(error, APIConnectionError):
        return ExitCode.UNREACHABLE, str(error)
    name = type(error).__name__
    return ExitCode.ERROR, (
        f"unexpected {name}: {error} (run with --debug for the traceback)"
    )


def run(ctx: click.Context, coroutine: Coroutine[Any, Any, int]) -> int:
    """Run *coroutine*; turn its errors into one readable line and an exit code.

    With ``--debug`` (the group's option), the error is raised instead.
    """
    try:
        return asyncio.run(coroutine)
    except Exception as error:
        if ctx.obj.get("debug"):
            raise
        code, message = describe(error)
        click.echo(f"error: {message}", err=True)
        return int(code)
