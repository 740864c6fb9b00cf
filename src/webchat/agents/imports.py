"""Objects named by import path (``package.module:attribute``), as profiles name agents and tools.

Profiles are written by the operator, so naming code in them is as trusted as the server's own
configuration; requests never make the server import anything (see ``EngineBuilder``). The
server's working directory is importable, like ``python -m`` makes it, because ``webchat serve``
is a console script whose ``sys.path`` would otherwise start at its own ``bin/`` directory.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from webchat.profiles.models import IMPORT_PATH_PATTERN
from webchat.tools.registry import Tool

_IMPORT_PATH = re.compile(IMPORT_PATH_PATTERN)


class ImportPathError(ValueError):
    """An import path that names nothing usable; the message says what was tried and why."""


def is_import_path(value: str) -> bool:
    """Whether ``value`` is written as ``module:attribute`` (a tool name never has a colon)."""
    return ":" in value


def import_object(path: str) -> Any:
    """The object ``path`` (``package.module:attr[.attr...]``) names.

    Raises ``ImportPathError`` saying whether the path is malformed, the module is missing or
    failed while importing (with the exception it raised), or the attribute is absent.
    """
    if not _IMPORT_PATH.fullmatch(path):
        raise ImportPathError(f"{path!r} is not an import path of the form 'package.module:name'")
    module_name, _, attributes = path.partition(":")
    _make_cwd_importable()
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ImportPathError(
                f"cannot import module {module_name!r}: {exc} "
                f"(is it on PYTHONPATH or in the server's working directory?)"
            ) from exc
        raise ImportPathError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
    except Exception as exc:  # the module's own code raised (SyntaxError included)
        raise ImportPathError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
    for name in attributes.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise ImportPathError(f"{module_name!r} has no attribute {attributes!r}") from None
    return target


_TOOLS: dict[str, Tool] = {}
"""Tools by import path, made once: a ``Tool`` holds no state, and ``build_config`` checks
the names of a request's tools on every request."""


def load_tool(path: str) -> Tool:
    """The tool a profile names by ``path``: a ``Tool`` as it is, or a typed function (sync
    or async) made into one exactly like ``Tool(fn)``: schema from its signature, description
    from its docstring, name from ``fn.__name__``."""
    tool = _TOOLS.get(path)
    if tool is None:
        tool = _TOOLS[path] = _make_tool(path)
    return tool


def _make_tool(path: str) -> Tool:
    target = import_object(path)
    if isinstance(target, Tool):
        return target
    if not callable(target) or isinstance(target, type):
        raise ImportPathError(f"{path!r} is {_kind(target)}, not a function or a Tool")
    try:
        return Tool(target)
    except (TypeError, ValueError, NameError) as exc:  # untyped parameters, *args, bad hints
        raise ImportPathError(f"{path!r} cannot be a tool: {exc}") from exc


def _make_cwd_importable() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # last, so it never shadows an installed package


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kind(target: object) -> str:
    if isinstance(target, type):
        return f"the class {target.__name__}"
    return f"a {type(target).__name__}"
