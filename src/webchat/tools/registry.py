"""Tools the model may call, and the registry that holds them.

A tool is made from a typed Python function: its JSON schema is derived from the signature, and
arguments from the model are validated against that same schema before the function runs, so
a tool body only ever sees well-typed values.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any, get_type_hints

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from webchat.engines.base import ToolDefinition


class ToolError(Exception):
    """A tool call that cannot produce a result; the message is shown to the model."""


class ToolArgumentsError(ToolError):
    """The model's arguments do not match the tool's schema."""


class Tool:
    """A callable tool with a name, a description and a validated argument schema."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.function = function
        self.name = name or function.__name__
        self.description = description or inspect.getdoc(function) or ""
        self.arguments_model = _arguments_model(self.name, function)
        self.is_async = inspect.iscoroutinefunction(function)
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        self.definition = ToolDefinition(
            name=self.name, description=self.description, parameters=schema
        )

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Arguments as the function expects them; raises ``ToolArgumentsError`` otherwise."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ToolArgumentsError(f"arguments are not valid JSON: {exc}") from exc
        if not isinstance(arguments, dict):
            raise ToolArgumentsError("arguments must be a JSON object")
        try:
            model = self.arguments_model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ToolArgumentsError(f"invalid arguments for {self.name}: {problems}") from exc
        return {field: getattr(model, field) for field in type(model).model_fields}

    async def call(self, arguments: Any) -> Any:
        """Validate, then run the function; sync functions run in a worker thread."""
        kwargs = self.validate(arguments)
        if self.is_async:
            return await self.function(**kwargs)
        return await anyio.to_thread.run_sync(lambda: self.function(**kwargs))


def tool(
    name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator form of ``Tool(fn, name=..., description=...)``."""

    def wrap(function: Callable[..., Any]) -> Tool:
        return Tool(function, name=name, description=description)

    return wrap


class ToolRegistry:
    """Tools by name. Order of registration is the order they are offered to a model."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, item: Tool | Callable[..., Any]) -> Tool:
        registered = item if isinstance(item, Tool) else Tool(item)
        if registered.name in self._tools:
            raise ValueError(f"tool {registered.name!r} is already registered")
        self._tools[registered.name] = registered
        return registered

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def definitions(self, allowed: Iterable[str] | None = None) -> list[ToolDefinition]:
        """Definitions of the registered tools, limited to ``allowed`` when given."""
        keep = None if allowed is None else set(allowed)
        return [t.definition for t in self._tools.values() if keep is None or t.name in keep]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)


def _arguments_model(tool_name: str, function: Callable[..., Any]) -> type[BaseModel]:
    signature = inspect.signature(function)
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs cannot be described to a model")
        if param.name not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {param.name!r} needs a type hint")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model: type[BaseModel] = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    return model
