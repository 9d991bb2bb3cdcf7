"""One meaning per name: no two public classes in the package share a name (issue 10 item 6).

Layers prefix where they would collide (`SipRequest`, `OrgaEndReason`, `RateVerdict`, ...), so a
name read anywhere means one thing. Private helpers (`_Protocol`) may repeat.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def test_public_class_names_are_unique() -> None:
    where: defaultdict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(PACKAGE)))
    assert {name: files for name, files in where.items() if len(files) > 1} == {}
