"""``python -m decisiontelecom_viber.sandbox``: serve the sandbox, one flag per knob."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import typing
from collections.abc import Sequence
from typing import Any

import attrs

from ._config import SandboxConfig
from ._server import serve_sandbox


__all__ = ["build_parser", "config_from_args", "main"]

# Short names the docs use, besides the generated --knob-name flags.
_ALIASES = {"rate_limit": ["--rate"]}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _description(doc: str | None, name: str) -> str:
    """The knob's description, from the SandboxConfig docstring."""
    lines = (doc or "").splitlines()
    marker = f"        {name}: "
    for number, line in enumerate(lines):
        if line.startswith(marker):
            parts = [line[len(marker) :].strip()]
            for more in lines[number + 1 :]:
                if not more.startswith("            "):
                    break
                parts.append(more.strip())
            return " ".join(parts).replace("``", "")
    return ""


def _add_off_or_choice(
    parser: argparse.ArgumentParser,
    flags: list[str],
    kwargs: dict[str, Any],
    args: tuple[Any, ...],
) -> None:
    """A ``Literal[False, "a", "b"]`` knob: ``--knob [a|b]`` and ``--no-knob``.

    The bare flag means the first choice (so ``--rate-limit-headers`` still
    means what it did when it was a boolean, with True read as "yii2").
    """
    choices = [a for a in args if a is not False]
    kwargs.update(
        nargs="?",
        const=choices[0],
        choices=choices,
        metavar="{" + ",".join(choices) + "}",
    )
    description, _, default = kwargs["help"].rpartition(" (default: ")
    kwargs["help"] = (
        f"{description} The bare flag means {choices[0]}. (default: {default}"
    )
    parser.add_argument(*flags, **kwargs)
    parser.add_argument(
        "--no-" + flags[0][2:],
        dest=kwargs["dest"],
        action="store_const",
        const=False,
        help=f"{flags[0]} off (False)",
    )


def build_parser(
    prog: str = "python -m decisiontelecom_viber.sandbox",
) -> argparse.ArgumentParser:
    """An argument parser with --host, --port and one flag per `SandboxConfig` knob."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a fake DecisionTelecom Viber API for tests and demos.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0 = any)"
    )
    hints = typing.get_type_hints(SandboxConfig)
    defaults = SandboxConfig()
    for field in attrs.fields(SandboxConfig):
        name = field.name
        hint = hints[name]
        default = getattr(defaults, name)
        flags = [_flag(name), *_ALIASES.get(name, [])]
        help_text = f"{_description(SandboxConfig.__doc__, name)} (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": help_text}
        args = typing.get_args(hint)
        literal = next(
            (a for a in args if typing.get_origin(a) is typing.Literal), None
        )
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs["nargs"] = "*"
        elif typing.get_origin(hint) is typing.Literal and False in args:
            _add_off_or_choice(parser, flags, kwargs, args)
            continue
        elif typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = args
        elif literal is not None:  # Literal[...] | None
            kwargs["choices"] = typing.get_args(literal)
        else:
            base = (
                next((a for a in args if a is not type(None)), hint) if args else hint
            )
            kwargs["type"] = base
        parser.add_argument(*flags, **kwargs)
    return parser


def config_from_args(namespace: argparse.Namespace) -> SandboxConfig:
    """Build a `SandboxConfig` from parsed arguments."""
    names = [field.name for field in attrs.fields(SandboxConfig)]
    return SandboxConfig(**{name: getattr(namespace, name) for name in names})


def main(
    argv: Sequence[str] | None = None,
    prog: str = "python -m decisiontelecom_viber.sandbox",
) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    parser = build_parser(prog)
    namespace = parser.parse_args(argv)
    try:
        config = config_from_args(namespace)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve_sandbox(config, host=namespace.host, port=namespace.port) as server:
        print(f"Sandbox serving at {server.base_url}", flush=True)  # noqa: T201
        print(f"Access key: {server.access_key}", flush=True)  # noqa: T201
        print(f"State: {server.root_url}/__sandbox/state", flush=True)  # noqa: T201
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
