"""What the whole suite shares through pytest itself. Helpers live in the `support` package beside this
file (tests/support/); a test module imports from there, never from another test module, and collection
fails if one does (a test module imported by another runs its module-level code, fixtures included, in
a place nobody reads it)."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# `support` is importable whatever pytest's import mode is.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from support.xmlvtn import XmlVtn  # noqa: E402 (importable only once HERE is on the path)

_IMPORTS_A_TEST = re.compile(r"^\s*(?:from|import)\s+(?:tests\.)?test_\w*", re.MULTILINE)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    if file_path.suffix == ".py" and file_path.name.startswith("test_"):
        found = _IMPORTS_A_TEST.search(file_path.read_text(encoding="utf-8"))
        if found:
            raise pytest.UsageError(f"{file_path.name} imports another test module ({found.group().strip()}): "
                                    "move what it needs into tests/support/")


@pytest.fixture
async def vtn() -> AsyncIterator[XmlVtn]:
    """The hand-written 2.0b VTN on loopback, polled every second; every message the VEN sent it must have
    passed the 2.0b schema. (A module that needs another VTN defines its own `vtn`, which wins.)"""
    v = XmlVtn(poll_s=1)
    await v.start()
    yield v
    await v.stop()
    assert v.schema_failures == []
