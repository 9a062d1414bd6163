"""docs/design.md's module map is the code's: every module of the package in one row, with the
layer and the imports the source has (read by tests/core/test_layers.py's `graph`)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from tests.core.test_layers import graph

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
Map = dict[str, tuple[int, set[str]]]  # module -> (layer, imports)
ROW = re.compile(r"^\| (\d+) \| `([^`]+)` \| .+ \| ([^|]+) \|$")


def documented(text: str) -> Map:
    """The table's rows; modules dotted, without the package name."""
    rows: Map = {}
    for line in text.splitlines():
        if match := ROW.match(line):
            layer, path, imports = match.groups()
            module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            rows[module] = (int(layer), {i.strip() for i in imports.split(",")} - {"-"})
    return rows


def actual() -> Map:
    edges = {
        m.removeprefix("lucidgrant."): {d.removeprefix("lucidgrant.") for d in deps}
        for m, deps in graph().items()
        if m != "lucidgrant"  # the package's __init__: its version only
    }

    @cache
    def layer(module: str) -> int:
        return 1 + max((layer(d) for d in edges[module]), default=-1)

    return {m: (layer(m), deps) for m, deps in edges.items()}


def differences(doc: Map, code: Map) -> list[str]:
    problems = [f"{m}: not in the module map" for m in sorted(code.keys() - doc.keys())]
    problems += [
        f"{m}: in the module map, not in the package" for m in sorted(doc.keys() - code.keys())
    ]
    for m in sorted(doc.keys() & code.keys()):
        if doc[m] != code[m]:
            problems.append(
                f"{m}: the map says layer {doc[m][0]}, imports {sorted(doc[m][1])}; "
                f"the code has layer {code[m][0]}, imports {sorted(code[m][1])}"
            )
    return problems


def test_the_module_map_is_the_code() -> None:
    problems = differences(documented(DESIGN.read_text()), actual())
    assert not problems, "docs/design.md's module map:\n" + "\n".join(problems)


def test_the_check_sees_a_stale_map() -> None:
    code = actual()
    text = DESIGN.read_text()
    assert documented(text).keys() == code.keys()
    missing = "\n".join(line for line in text.splitlines() if "`wal.py`" not in line)
    assert differences(documented(missing), code) == ["wal: not in the module map"]
    stale = text.replace("| 7 | `web.py` |", "| 6 | `web.py` |")
    assert [p.split(":")[0] for p in differences(documented(stale), code)] == ["web"]
    fewer = re.sub(r"(\| `refresh\.py` \|.*\|) ([^|]+), wal \|", r"\1 \2 |", text)
    assert [p.split(":")[0] for p in differences(documented(fewer), code)] == ["refresh"]
