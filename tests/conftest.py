"""What the whole suite shares through pytest itself. Helpers live in the `support` package beside this
file (tests/support/); a test module imports from there, never from another test module, and collection
fails if one does (a test module imported by another runs its module-level code, fixtures included, in
a place nobody reads it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# `support` is importable whatever pytest's import mode is.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

_IMPORTS_A_TEST = re.compile(r"^\s*(?:from|import)\s+(?:tests\.)?test_\w*", re.MULTILINE)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    if file_path.suffix == ".py" and file_path.name.startswith("test_"):
        found = _IMPORTS_A_TEST.search(file_path.read_text(encoding="utf-8"))
        if found:
            raise pytest.UsageError(f"{file_path.name} imports another test module ({found.group().strip()}): "
                                    "move what it needs into tests/support/")
