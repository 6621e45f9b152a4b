"""Small shims for the Python versions langchain-core 1.x supports (3.10+)."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from enum import StrEnum
else:  # pragma: no cover

    class StrEnum(str, Enum):
        """``enum.StrEnum`` for Python 3.10."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = ["StrEnum"]
