"""Integration cost of each library in ood-bench: our adapter's lines and its workarounds.

Every workaround in an adapter is a comment starting ``WORKAROUND:`` that says why; they are
read from the code, so this figure follows the code.
"""

from __future__ import annotations

import re

from libcompare.code import sloc
from libcompare.libraries import Library
from libcompare.measure import Measure, na

A = "integration"
MARK = re.compile(r"WORKAROUND:\s*(.*)")


def workarounds(lib: Library, width: int = 110) -> list[str]:
    """Every ``WORKAROUND:`` comment in the library's adapter files, continuation lines joined,
    shortened to its first ``width`` characters."""
    found = []
    for path in lib.adapter_files():
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = MARK.search(line)
            if not m:
                continue
            in_docstring = line.strip().startswith('"""')
            text = [m.group(1)]
            for nxt in lines[i + 1 :]:
                body = nxt.strip()
                if "WORKAROUND:" in body or not body or body.startswith('"""'):
                    break
                if body.startswith("#") != (not in_docstring):
                    break  # a comment ends at code, a docstring at a comment
                text.append(body.lstrip("# ") if not in_docstring else body)
            joined = " ".join(t.strip() for t in text).replace("``", "")
            found.append(joined if len(joined) <= width else joined[: width - 1].rstrip() + "…")
    return found


def measure(lib: Library) -> list[Measure]:
    """Adapter lines, configuration files and workarounds for one library."""
    if not lib.adapter:
        why = "the harness itself: its detectors need no adapter"
        return [
            na(lib.key, A, "adapter code", "radon SLOC of the adapter", why, "SLOC"),
            na(lib.key, A, "workarounds", "WORKAROUND: comments in the adapter", why),
        ]
    files = lib.adapter_files()
    found = workarounds(lib)
    return [
        Measure(
            lib.key,
            A,
            "adapter code",
            sloc(files),
            f"radon SLOC of {', '.join(lib.adapter_paths())}",
            "SLOC",
        ),
        Measure(
            lib.key,
            A,
            "workarounds",
            len(found),
            "WORKAROUND: comments in the adapter",
            detail=" | ".join(found),
        ),
    ]
