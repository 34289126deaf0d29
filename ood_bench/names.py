"""Names that become file names, URLs or table cells: one character set, checked where they enter.

A benchmark, detector, OOD set, novelty scenario or method name ends up in paths (sweep folders,
``results/site/<benchmark>.html``, ``img/<benchmark>_*.svg``), in links and in LaTeX tables. Rather
than escape it at each use, a name is checked once where it enters — the composed config of a job
and every CSV row a report reads — against :data:`NAME_PATTERN`:

- 1 to 64 characters, ASCII letters, digits, ``_``, ``-``, ``.`` and ``+``;
- starting with a letter or a digit (so never ``.``/``..``, ``-flag`` or an absolute path);
- no ``/``, ``\\``, ``:``, space, quote, ``$``, ``{`` or ``}``: nothing a shell, a URL scheme
  (``javascript:``), a path (``../``), TeX (``^^5c``) or OmegaConf (``${oc.env:…}``) reads.

Every shipped option fits (a test walks ``conf/``); :func:`check_name` names the offending value,
the rule and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ood_bench.errors import ConfigError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,63}")
NAME_RULE = (
    "1-64 characters from A-Z a-z 0-9 _ - . +, starting with a letter or digit "
    "(no '/', ':', spaces, '$', braces)"
)


def is_valid_name(value: object) -> bool:
    """Whether ``value`` is a string that fits :data:`NAME_PATTERN` (and is not ``.``-only)."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def check_name(value: object, what: str, where: str = "") -> str:
    """``value`` unchanged when it is a valid name, else a :class:`ConfigError` naming ``what``
    (e.g. ``"benchmark name"``), where it came from, the rule and the fix."""
    if is_valid_name(value):
        return value  # type: ignore[return-value]
    origin = f" (from {where})" if where else ""
    raise ConfigError(
        f"invalid {what} {value!r}{origin}: a name becomes a file name, a link and a table "
        f"cell, so it must be {NAME_RULE}. Fix: rename it, e.g. "
        f"{suggest_name(value)!r}."
    )


def check_names(values: Iterable[object], what: str, where: str = "") -> list[str]:
    """:func:`check_name` on each value; also refuses a name given twice."""
    out: list[str] = []
    for v in values:
        name = check_name(v, what, where)
        if name in out:
            origin = f" in {where}" if where else ""
            raise ConfigError(
                f"{what} {name!r} is given twice{origin}: the second would replace the first's "
                "rows. Fix: give each a distinct name."
            )
        out.append(name)
    return out


def suggest_name(value: object) -> str:
    """A valid name close to ``value`` (disallowed characters → ``_``), for error messages."""
    text = re.sub(r"[^A-Za-z0-9_.+\-]", "_", str(value)).lstrip("._-+")[:64]
    return text or "name"
