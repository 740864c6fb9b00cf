"""A calculator tool that evaluates arithmetic without ``eval``.

The expression is parsed with ``ast`` and only numbers, parentheses and arithmetic operators are
accepted; anything else (names, calls, attributes) is rejected. Exponents and operand sizes are
bounded so a model cannot make the server compute a number with millions of digits.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from webchat.tools.registry import Tool, ToolError

MAX_EXPRESSION_LENGTH = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression; raises ``ToolError`` with a readable reason."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    cleaned = expression.replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    try:
        tree = ast.parse(cleaned.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    value = _eval(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        if isinstance(node.value, bool):
            raise ToolError("booleans are not numbers here")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"exponent larger than {MAX_EXPONENT}")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ToolError("division by zero") from exc
        except OverflowError as exc:
            raise ToolError("result is too large") from exc
        if isinstance(result, complex):
            raise ToolError("result is not a real number")
        if abs(result) > MAX_MAGNITUDE or (isinstance(result, float) and not math.isfinite(result)):
            raise ToolError("result is too large")
        return result
    raise ToolError(f"unsupported element in expression: {ast.unparse(node)!r}")


def calculator(expression: str) -> Number:
    """Evaluate an arithmetic expression (+, -, *, /, //, %, ** and parentheses)."""
    return evaluate(expression)


def calculator_tool() -> Tool:
    return Tool(calculator, name="calculator")
