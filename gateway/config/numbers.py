"""The number types of every config and input model: a number must be written as a number.

Pydantic's lax mode reads `true` as 1 and `"32"` as 32; in a site file that is a slip (`fallback_a = true`,
`max_a = "32"`) that would be silently accepted as a current. `Real` accepts integers and floats only;
`Whole` integers, and floats with nothing after the point (`60.0`); both refuse booleans and strings with
a line naming the field, like any other value (`gateway.config.number_problem` words it).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Strict
from pydantic_core import PydanticCustomError


def _not_bool_or_text(value: object) -> object:
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "expected a whole number")
    return value


Real = Annotated[float, Strict()]
Whole = Annotated[int, BeforeValidator(_not_bool_or_text)]

__all__ = ["Real", "Whole"]
