"""Value constraints written into constructor signatures, read by the config check.

Where a range matters, the annotation says so::

    def __init__(self, batch_size: PositiveInt = 256, label_smoothing: UnitInterval = 0.0): ...

The config check reads them from source and refuses ``data.batch_size=0`` in one line before
torch is imported; at run time they are plain ``int``/``float`` (``typing.Annotated``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """Accepted interval: ``lo``/``hi`` bounds (None = open-ended), each inclusive or not."""

    lo: float | None = None
    hi: float | None = None
    lo_inclusive: bool = True
    hi_inclusive: bool = True

    def accepts(self, value: float) -> bool:
        lo, hi = self.lo, self.hi
        if lo is not None and (value < lo or (value == lo and not self.lo_inclusive)):
            return False
        return not (hi is not None and (value > hi or (value == hi and not self.hi_inclusive)))

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>=' if self.lo_inclusive else '>'} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<=' if self.hi_inclusive else '<'} {self.hi:g}")
        return "must be " + " and ".join(parts)


PositiveInt = Annotated[int, Range(lo=0, lo_inclusive=False)]
NonNegativeInt = Annotated[int, Range(lo=0)]
PositiveFloat = Annotated[float, Range(lo=0, lo_inclusive=False)]
NonNegativeFloat = Annotated[float, Range(lo=0)]
UnitInterval = Annotated[float, Range(lo=0, hi=1, hi_inclusive=False)]  # [0, 1)

__all__ = [
    "NonNegativeFloat",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "UnitInterval",
]
