"""The shape of the project: no import circles, the reading path imports nothing of tools/, and every line range
the README gives for a piece of code is where that code is."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READING_PATH = ("whisfusion", "train", "decode", "data")


def project_modules() -> dict[str, Path]:
    mods = {p.stem: p for p in ROOT.glob("*.py")}
    mods.update({f"tools.{p.stem}": p for p in (ROOT / "tools").glob("*.py") if p.stem != "__init__"})
    return mods


def imports_of(path: Path, mods) -> set[str]:
    """Every project module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in mods}
    return out


def test_no_import_circles_and_the_reading_path_imports_no_tools():
    mods = project_modules()
    graph = {m: imports_of(p, mods) - {m} for m, p in mods.items()}
    for m in READING_PATH:
        assert not {d for d in graph[m] if d.startswith("tools")}, f"{m}.py imports {graph[m]}"

    def visit(m, path):
        assert m not in path, "import circle: " + " -> ".join(path[path.index(m):] + [m])
        for d in graph[m]:
            visit(d, path + [m])
    for m in graph:
        visit(m, [])


def symbol_lines(path: Path) -> dict[str, tuple[int, int]]:
    """(first, last) line of every top-level function and class, and of every method as Class.method."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[node.name] = (first, node.end_lineno)
            for sub in getattr(node, "body", []):
                if isinstance(sub, ast.FunctionDef):
                    out[f"{node.name}.{sub.name}"] = (sub.lineno, sub.end_lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    out[t.id] = (node.lineno, node.end_lineno)
    return out


REF = re.compile(r"`(\w+\.py)` L(\d+)-(\d+) \(`([\w.]+)`\)")  # `file.py` L12-34 (`Symbol`)


def test_every_line_range_in_the_readme_holds_its_code():
    readme = (ROOT / "README.md").read_text()
    refs = REF.findall(readme)
    assert len(refs) >= 8, "the README's mechanism table gives the code's line ranges"
    for file, a, b, name in refs:
        symbols = symbol_lines(ROOT / file)
        assert name in symbols, f"{file} has no {name}"
        first, last = symbols[name]
        assert (int(a), int(b)) == (first, last), f"{file}:{name} is L{first}-{last}, the README says L{a}-{b}"


def test_the_file_map_line_counts_hold():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| \[`(\w+\.py)`\]\(\w+\.py\) \| (\d+) \|", readme, flags=re.M)
    assert {f for f, _ in rows} >= {f"{m}.py" for m in READING_PATH}
    for file, n in rows:
        assert int(n) == len((ROOT / file).read_text().splitlines()), f"{file} is not {n} lines"


@pytest.mark.parametrize("module", READING_PATH)
def test_no_history_in_the_reading_path(module):
    """Comments give reasons: no card timings, dates or issue numbers in the four files."""
    text = (ROOT / f"{module}.py").read_text()
    for pattern in (r"\bH100\b", r"\bH200\b", r"issue #\d+", r"\b20\d\d-\d\d-\d\d\b", r"\bsitting\b"):
        assert not re.search(pattern, text), f"{module}.py: {re.search(pattern, text).group()}"
