"""The package's shape: no import cycles, the core knows nothing of test tooling, no hidden
switches, one job per module, small functions.

Read from the source with :mod:`ast`, imports inside functions and under ``if TYPE_CHECKING:``
included: a lazy or type-only import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gpt2lib"
MAX_LINES = 60  # a longer function states why in its docstring ("Long: ...")
MAX_PUBLIC = 14  # public functions and classes of one module: more is more than one job


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The gpt2lib modules ``path`` imports (``from .x import y`` resolved, y a module or not)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gpt2lib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("gpt2lib"):
                target = node.module
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & set(files) - {name} for name, path in files.items()}


def test_no_import_cycles() -> None:
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "active"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_library_never_imports_tooling() -> None:
    """Nothing under gpt2lib/ imports tools/, tests/, scripts/ or benchmarks/."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            )  # fmt: skip
            bad = [n for n in names if n.split(".")[0] in ("tools", "tests", "scripts", "benchmarks")]
            if bad:
                offenders[module_name(path)] = bad
    assert offenders == {}


def test_functions_are_short_or_say_why() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES and "Long:" not in (ast.get_docstring(node) or ""):
                    long.append(f"{module_name(path)}.{node.name}: {lines} lines")
    assert long == []


def public_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    ]


def test_one_job_per_module() -> None:
    crowded = {
        module_name(path): len(names)
        for path in sorted(PACKAGE.rglob("*.py"))
        if len(names := public_names(path)) > MAX_PUBLIC
    }
    assert crowded == {}


# what the library may read from the environment: locations, and other tools' own conventions
ALLOWED_ENV = {
    "GPT2LIB_HOME", "GPT2LIB_MIRROR", "OLLAMA_HOST", "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR",
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",
}  # fmt: skip


def environment_reads(path: Path) -> set[str]:
    """The names ``path`` reads with ``os.environ[...]``, ``os.environ.get(...)``,
    ``os.environ.setdefault(...)`` or ``os.getenv(...)``; ``"?"`` for a name not spelled out."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "os.environ.get", "os.environ.setdefault", "os.getenv", "os.environ.pop",
        ):  # fmt: skip
            key = node.args[0] if node.args else None
        elif isinstance(node, ast.Attribute) and ast.unparse(node) == "os.environ":
            continue
        else:
            continue
        found.add(key.value if isinstance(key, ast.Constant) else "?")
    return found


def test_no_library_function_reads_a_setting_from_the_environment() -> None:
    """Profiles, loop caps and recipes come from the chapters' settings cells as arguments."""
    read = {module_name(p): environment_reads(p) for p in sorted(PACKAGE.rglob("*.py"))}
    assert {m: sorted(names - ALLOWED_ENV) for m, names in read.items() if names - ALLOWED_ENV} == {}
    assert read["gpt2lib.download"] == {"GPT2LIB_HOME", "GPT2LIB_MIRROR"}  # the test sees reads


def test_no_module_level_registry_decides_a_code_path() -> None:
    """No module keeps a mutable mapping of objects (a weak-keyed registry, say) at module level."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None)
            if isinstance(value, ast.Call):
                name = getattr(value.func, "attr", getattr(value.func, "id", ""))
                if name in ("WeakKeyDictionary", "WeakValueDictionary", "WeakSet"):
                    found.append(f"{module_name(path)}: {name}")
    assert found == []


def test_no_private_name_crosses_modules() -> None:
    """A helper two modules share is public (or lives where both can use it as their own)."""
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gpt2lib")):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    crossing.append(f"{module_name(path)}: {node.module} {private}")
    assert crossing == []


def _requirement_names() -> set[str]:
    names = set()
    for line in (PACKAGE.parent / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>;\[ ]", line)[0].lower().replace("_", "-"))
    return names


def test_chapters_import_only_the_library_and_the_requirements() -> None:
    """No chapter imports tools/, tests/ or anything requirements.txt does not name."""
    import importlib.metadata
    import json
    import sys

    dists = importlib.metadata.packages_distributions()
    required = _requirement_names()
    outside = {}
    for notebook in sorted((PACKAGE.parent / "book").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for top in set(re.findall(r"^\s*(?:from|import)\s+(\w+)", code, re.M)):
            if top in sys.stdlib_module_names or top == "gpt2lib":
                continue
            names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
            if not names & required:
                outside.setdefault(notebook.name, []).append(top)
    assert outside == {}
