"""Print the package layout for docs/architecture.md: one line per file, with its docstring's first line.

    python scripts/layout.py > /tmp/layout.txt   # then paste into docs/architecture.md
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().split("\n")[0].strip()


def layout(root: Path = REPO / "nemo_emmett") -> list[str]:
    """``path  summary`` per file, folders before their files' siblings, ``__init__.py`` first."""
    lines = []

    def walk(folder: Path, depth: int) -> None:
        files = sorted(folder.glob("*.py"), key=lambda p: (p.name != "__init__.py", p.name))
        for f in files:
            name = f"{'  ' * depth}{f.name}"
            lines.append(f"{name:<34} {first_line(f)}")
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
            lines.append(f"{'  ' * depth}{sub.name}/")
            walk(sub, depth + 1)

    lines.append("nemo_emmett/")
    walk(root, 1)
    return lines


if __name__ == "__main__":
    print("\n".join(layout()))
