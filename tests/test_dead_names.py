"""One copy of each thing, and nothing kept that nobody uses.

- every top-level public name (function, class, constant; no leading underscore) defined in
  ``model/``, ``harness/`` or ``vm/`` is used somewhere else in the repository's ``.py``
  files: a ``Name`` (not a function's own parameter or local of that spelling), an
  attribute (read through a name bound to the defining module, ``C.X``, or through any
  other object), an ``import`` of it or a string equal to it (``getattr`` tables, ``vm``'s
  lazy exports), outside its own definition;
- no module docstring in those packages says which issue made it (``issue 6``): a
  docstring says what the module does;
- a public top-level name of ``model/`` is defined in one module (save a short list, each
  name a different format's own table or magic);
- no top-level alias in ``model/`` gives a second name to a type (``X = Y`` with ``Y`` a
  class): one type, one name.

The references are collected with :mod:`ast` from the files on disk, independently of
the packages' own imports.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "harness", "vm")
SKIP_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache"}

# Names used from outside the Python sources, so no .py file needs to name them.
ENTRY_POINTS = {
    # pyproject.toml [project.scripts]: fsoracle = "harness.cli:main"
    ("harness/cli.py", "main"),
}


def _py_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if SKIP_DIRS.isdisjoint(rel.parts[:-1]) and not rel.parts[0].endswith(".egg-info"):
            yield path


def _top_level_names(tree: ast.Module) -> Iterator[tuple[str, ast.stmt]]:
    """The public names a module's top-level statements define, with the statement."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        yield sub.id, node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            yield node.target.id, node


def _local_names(func: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """The names a function binds itself (parameters, assignments, loop and ``with``
    targets), which shadow a module's names of the same spelling inside it."""
    args = func.args
    bound = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    bound |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    if not isinstance(func, ast.Lambda):
        for node in ast.walk(func):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
        global_names = {
            n for node in ast.walk(func) if isinstance(node, ast.Global) for n in node.names
        }
        bound -= global_names
    return bound


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_aliases(tree: ast.Module, modules: Collection[str]) -> dict[str, str]:
    """The names a module binds to the repository's modules: ``import a.b as X``,
    ``import a`` (then ``a.b`` is followed through attributes), ``from a import b as X``."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in modules:
                    out[a.asname] = a.name
                elif not a.asname and a.name.split(".")[0] in modules:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in modules:
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _references(
    tree: ast.Module, modules: Collection[str] = ()
) -> Iterator[tuple[str, int, str | None]]:
    """(name, line, module) for every use of a name in a module: loads (not of a
    function's own parameters and locals), attributes, imports and string constants
    (``getattr`` tables, lazy exports). ``module`` is the repository module an attribute
    is read from (``C.X`` with ``from model.btrfs import constants as C``), else None:
    the use counts for any definition of that name."""
    aliases = _module_aliases(tree, modules)

    def module_of(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = module_of(expr.value)
            if base is not None and f"{base}.{expr.attr}" in modules:
                return f"{base}.{expr.attr}"
        return None

    def visit(node: ast.AST, local: frozenset[str]) -> Iterator[tuple[str, int, str | None]]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local = local | _local_names(node)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Store):
            if node.id not in local:
                yield node.id, node.lineno, None
        elif isinstance(node, ast.Attribute):
            yield node.attr, node.lineno, module_of(node.value)
        elif isinstance(node, ast.alias):
            yield node.name.rsplit(".", 1)[-1], node.lineno, None
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.isidentifier()
        ):
            yield node.value, node.lineno, None
        for child in ast.iter_child_nodes(node):
            yield from visit(child, local)

    yield from visit(tree, frozenset())


def dead_names() -> list[str]:
    """``path:line name`` for every public top-level name in PACKAGES used nowhere else."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in _py_files()}
    modules = {_module_name(path) for path in trees}
    # name -> (file, line, module read from) of every reference
    refs: dict[str, list[tuple[Path, int, str | None]]] = {}
    for path, tree in trees.items():
        for name, line, module in _references(tree, modules):
            refs.setdefault(name, []).append((path, line, module))
    dead: list[str] = []
    for path, tree in trees.items():
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in PACKAGES:
            continue
        here = _module_name(path)
        for name, node in _top_level_names(tree):
            if name.startswith("_") or (rel.as_posix(), name) in ENTRY_POINTS:
                continue
            first, last = node.lineno, node.end_lineno or node.lineno
            used = any(
                (ref_path != path or not first <= line <= last) and module in (None, here)
                for ref_path, line, module in refs.get(name, [])
            )
            if not used:
                dead.append(f"{rel}:{node.lineno} {name}")
    return dead


def test_dead_names_finds_an_unused_name(tmp_path: Path) -> None:
    """The scan's own rules on a small module: a use inside the definition (recursion) does
    not count, a load, an attribute, an import or a string elsewhere does."""
    src = (
        "def used(): pass\n"
        "def recursive(n):\n    return recursive(n - 1)\n"
        "X = 1\n"
        "Y = 2\n"
        "Z = 3\n"
        "W = 4\n"
        "def shadow(W):\n    return W\n"
        "print(used(), m.X, getattr(m, 'Y'))\n"
        "from m import Z\n"
    )
    tree = ast.parse(src)
    defined = {name: node for name, node in _top_level_names(tree)}
    assert set(defined) == {"used", "recursive", "X", "Y", "Z", "W", "shadow"}
    refs = [(name, line) for name, line, _ in _references(tree)]
    recursive = defined["recursive"]
    assert [line for name, line in refs if name == "recursive"] == [3]
    assert recursive.lineno <= 3 <= (recursive.end_lineno or 0)
    names = {name for name, _ in refs}
    assert {"used", "X", "Y", "Z"} <= names
    assert "W" not in names  # only the parameter of shadow() is used


def test_dead_names_follows_module_aliases() -> None:
    """``C.X`` read through a name bound to one of the repository's modules counts for
    that module's ``X`` only; ``obj.X`` counts for any ``X``."""
    src = (
        "import pkg.a as A\nfrom pkg import b as B\nimport pkg.c\nprint(A.X, B.Y, pkg.c.Z, obj.W)\n"
    )
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    attrs = {
        (name, module) for name, _, module in _references(ast.parse(src), modules) if name in "XYZW"
    }
    assert attrs == {("X", "pkg.a"), ("Y", "pkg.b"), ("Z", "pkg.c"), ("W", None)}


def test_no_dead_names() -> None:
    dead = dead_names()
    assert dead == [], "public top-level names used nowhere else:\n" + "\n".join(dead)


ISSUE_RE = re.compile(r"\bissue \d+", re.IGNORECASE)


def test_module_docstrings_do_not_name_issues() -> None:
    bad: list[str] = []
    for path in _py_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in PACKAGES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(), str(path)), clean=False) or ""
        bad += [f"{rel}: {m.group(0)!r}" for m in ISSUE_RE.finditer(doc)]
    assert bad == [], "module docstrings naming the issue that made them:\n" + "\n".join(bad)


def _type_aliases(tree: ast.Module, classes: set[str]) -> Iterator[tuple[int, str]]:
    """(line, ``X = Y``) for each second name a module's top level gives a class ``Y``:
    ``X = Y``, ``X: TypeAlias = Y``, ``X = mod.Y`` with ``Y`` one of ``classes`` or a
    builtin type, and ``from m import Y as X``."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name in classes and a.asname not in (None, a.name):
                    yield node.lineno, f"{a.asname} = {a.name}"
            continue
        value: ast.expr | None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or value is None:
            continue
        if isinstance(value, ast.Name):
            name = value.id
        elif isinstance(value, ast.Attribute):
            name = value.attr
        else:
            continue
        if name in classes or isinstance(getattr(builtins, name, None), type):
            yield node.lineno, f"{target.id} = {name}"


def test_type_alias_scan_finds_aliases() -> None:
    src = (
        "from m import Block as Buf, Key\n"
        "class Block: pass\n"
        "Eb = Block\n"
        "Eb2: TypeAlias = m.Block\n"
        "Size = int\n"
        "Pair = tuple[int, int]\n"  # a compound type, not a second name for one
        "LIMIT = OTHER\n"
    )
    found = [a for _, a in _type_aliases(ast.parse(src), {"Block"})]
    assert found == ["Buf = Block", "Eb = Block", "Eb2 = Block", "Size = int"]


def test_no_type_aliases_in_model() -> None:
    trees = {
        path: ast.parse(path.read_text(), str(path))
        for path in _py_files()
        if path.relative_to(ROOT).parts[0] == "model"
    }
    classes = {
        node.name for tree in trees.values() for node in tree.body if isinstance(node, ast.ClassDef)
    }
    bad = [
        f"{path.relative_to(ROOT)}:{line} {alias}"
        for path, tree in trees.items()
        for line, alias in _type_aliases(tree, classes)
    ]
    assert bad == [], "second names for one type:\n" + "\n".join(bad)


# Programs run on the target (stdlib only, pushed as one file): they repeat the constants
# and helpers they need from the model by design.
GUEST_PROGRAMS = ("harness/*/guest.py", "harness/workload/driver.py")
# Names each room defines by convention: a command family's ``register`` and its ``cmd_*``
# functions (in ``cli`` modules), a program's ``main``, a JSON format's own ``SCHEMA``.
CONVENTIONAL = re.compile(r"^(main|SCHEMA)$")
CLI_CONVENTIONAL = re.compile(r"^(register|cmd_\w+)$")
# Names two modules each define for their own thing, where the module says which.
ALIKE_ALLOWED = {
    # model/btrfs/constants.py, model/ext4/constants.py: each filesystem's incompat names
    "INCOMPAT_NAMES",
}


def names_alike(root: Path = ROOT) -> list[str]:
    """Public top-level names defined in more than one module of model/, vm/, harness/
    (guest programs and the conventional names above excepted), one line per name."""
    where: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            if any(rel.match(g) for g in GUEST_PROGRAMS):
                continue
            cli = rel.name == "cli.py"
            seen: set[str] = set()
            for name, _node in _top_level_names(ast.parse(path.read_text())):
                if name.startswith("_") or name in seen or name in ALIKE_ALLOWED:
                    continue
                if CONVENTIONAL.match(name):
                    continue
                if cli and CLI_CONVENTIONAL.match(name):
                    continue
                seen.add(name)
                where.setdefault(name, []).append(str(rel))
    return [f"{n}: {', '.join(ms)}" for n, ms in sorted(where.items()) if len(ms) > 1]


def test_names_alike_scan_finds_a_planted_pair(tmp_path: Path) -> None:
    for rel, text in {
        "model/a.py": "X = 1\ndef f(): pass\n_p = 2\nmain = 3\n",
        "vm/b.py": "class f: pass\n_p = 3\nmain = 4\n",
        "harness/s/guest.py": "X = 1\n",  # a guest program: not counted
        "harness/s/cli.py": "def register(): pass\ndef cmd_go(): pass\n",
        "harness/t/cli.py": "def register(): pass\ndef cmd_go(): pass\n",
        "harness/c.py": "def register(): pass\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert names_alike(tmp_path) == ["f: model/a.py, vm/b.py"]


def test_no_two_top_level_names_alike() -> None:
    """One concept, one name in one place: a name defined twice is either one thing
    written twice (import it) or two things that need names saying which."""
    alike = names_alike()
    assert not alike, "\n".join(alike)
