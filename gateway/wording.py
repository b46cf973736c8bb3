"""How a bad value is said in one line, for the config and for every other input (the status API's bodies,
the allocator's JSON): what was expected and what came, cut short so the line stays readable whatever was
pasted.
"""

from __future__ import annotations


def kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {short_repr(value)}"


def number_problem(kind: str, value: object) -> str | None:
    """The line for a value that is not the number a key needs (TOML and JSON alike); None for other kinds."""
    if kind not in ("float_type", "int_type", "int_from_float"):
        return None
    wanted = "a whole number" if kind != "float_type" else "a number"
    if isinstance(value, bool):
        got = f"the boolean {'true' if value else 'false'}"
    elif isinstance(value, str):
        got = f"the string {short_repr(value)}" + (" (write it without quotes)" if _numeric(value) else "")
    elif isinstance(value, int | float):
        got = f"{value!r}"
    else:
        got = kind_of(value)
    return f"expected {wanted}, got {got}"


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def short_repr(value: object, limit: int = 60) -> str:
    """repr(value), cut: a problem line must stay one readable line whatever the user pasted."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
