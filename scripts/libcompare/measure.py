"""One measured figure: value, unit, how it was measured, and why it is missing when it is."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ASPECTS = ("installation", "API", "code quality", "integration", "performance")


@dataclass
class Measure:
    """A figure of one library. ``value`` None means n/a, and ``why`` must say why."""

    library: str
    aspect: str
    name: str
    value: float | int | str | None
    method: str
    unit: str = ""
    why: str = ""
    detail: str = ""  # what lies behind the figure (names, error text), for the findings

    def __post_init__(self) -> None:
        """Check the aspect, and that an n/a says why."""
        if self.aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {self.aspect!r}; one of {ASPECTS}")
        if self.value is None and not self.why:
            raise ValueError(f"{self.library} / {self.name}: n/a needs a reason (why=...)")

    @property
    def numeric(self) -> bool:
        """Whether the value is a number (not text, a yes/no or n/a)."""
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)

    def cell(self) -> str:
        """The table cell: the number (ints plain, floats to 3 significant places unless
        large), the text, or ``n/a (why)``."""
        v = self.value
        if v is None:
            return f"n/a ({self.why})"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
        return str(v)

    def row(self) -> dict[str, Any]:
        """The measure as one row of measurements.csv."""
        return asdict(self)


def na(library: str, aspect: str, name: str, method: str, why: str, unit: str = "") -> Measure:
    """A figure that could not be measured here, with the reason."""
    return Measure(library, aspect, name, None, method, unit, why=why)
