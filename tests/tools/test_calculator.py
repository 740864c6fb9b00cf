import pytest

from webchat.tools import ToolError, calculator_tool, evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("6*7", 42),
        ("(6*7) + 2**3", 50),
        ("-3 + +2", -1),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2^10", 1024),
        ("1.5 * 4", 6),
        (" 10 - 2 - 3 ", 5),
    ],
)
def test_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "unsupported element"),
        ("open('/etc/passwd')", "unsupported element"),
        ("x + 1", "unsupported element"),
        ("(1).real", "unsupported element"),
        ("'a' * 3", "unsupported element"),
        ("True + 1", "booleans"),
        ("1 / 0", "division by zero"),
        ("9 ** 9999", "exponent larger"),
        ("10.0 ** 400", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 201, "longer than"),
    ],
)
def test_rejects_anything_but_arithmetic(expression, reason):
    with pytest.raises(ToolError, match=reason):
        evaluate(expression)


async def test_calculator_tool_schema_and_call():
    t = calculator_tool()
    assert t.name == "calculator"
    assert t.definition.parameters["required"] == ["expression"]
    assert await t.call({"expression": "2+2"}) == 4
