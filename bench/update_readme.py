"""Copy the tables of bench/results/*.md into README.md, between marker comments.

README numbers come only from benchmark results: a block

    <!-- bench:NAME -->
    ...
    <!-- /bench:NAME -->

is replaced by the first table of bench/results/NAME.md, followed
by a link to the full results file. Run after a benchmark: python bench/update_readme.py
"""

from __future__ import annotations

import re
import sys

from common import RESULTS, ROOT


def first_table(lines: list[str]) -> list[str]:
    """The first Markdown table in `lines` (a results file may hold more; the first is the
    summary the README shows)."""
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def table_of(name: str) -> str:
    path = RESULTS / f"{name}.md"
    if not path.is_file():
        return f"(no results yet: run `python bench/{name}.py`)"
    rows = first_table(path.read_text().splitlines())
    return (
        "\n".join(rows) + f"\n\nFull results, settings and machine: [{path.relative_to(ROOT)}]"
        f"({path.relative_to(ROOT)})."
    )


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- bench:([\w-]+) -->)\n(?:.*?\n)?(<!-- /bench:\2 -->)", re.S)
    new = pattern.sub(lambda m: f"{m.group(1)}\n{table_of(m.group(2))}\n{m.group(3)}", text)
    readme.write_text(new)
    print(f"updated {len(pattern.findall(text))} block(s) in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
