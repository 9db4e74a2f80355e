"""docs/benchmarks.md is shared: each bench script rewrites its own section of it, in place.

One function for all of them, so that a section keeps its place, its neighbours and the one blank
line between sections whichever script wrote it last.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(lines: list[str], path: Path = BENCHMARKS, add_before: str | None = "## Fuzzing") -> bool:
    """Put ``lines`` (a section: its ``## `` title first) in place of the section with that title.

    A page without it gets it before the ``add_before`` section (at the end when that is missing
    too), or, with ``add_before=None``, is left alone. True when the page was written.
    """
    title = lines[0]
    block = "\n".join(lines).rstrip("\n") + "\n"
    doc = path.read_text() if path.exists() else ""
    if doc.startswith(title + "\n") or f"\n{title}\n" in doc:
        head, _, rest = doc.partition(title + "\n")
        tail = rest.split("\n## ", 1)
        doc = head + block + ("\n## " + tail[1] if len(tail) > 1 else "")
    elif add_before is None:
        return False
    elif f"\n{add_before}\n" in doc:
        head, _, rest = doc.partition(f"\n{add_before}\n")
        doc = head.rstrip("\n") + "\n\n" + block + f"\n{add_before}\n" + rest
    else:
        doc = (doc.rstrip("\n") + "\n\n" if doc.strip() else "") + block
    path.write_text(doc)
    return True
