"""Import cycles and layering across model/, vm/ and harness/, from the source alone.

Every module under those packages is parsed (never imported) and each ``import`` statement
anywhere in it, including inside functions and ``if TYPE_CHECKING:`` blocks, becomes an edge
to the most specific module of ours it names: ``from vm.machine import Machine`` is an edge to
``vm.machine``; ``from harness.workload import driver`` to ``harness.workload.driver`` (a
module); ``import vm`` or ``from vm import Machine`` to the package ``vm`` itself (a name that
package only re-exports is not followed to its module). Imports of other distributions are
ignored.

The test fails on

- a cycle between modules (a strongly connected group of more than one module, or one
  importing itself), printed as a path ``a -> b -> a``, unless it is in :data:`KNOWN_CYCLES`
  (each of which must still exist, so the list cannot go stale);
- a layering break: an import that a :data:`RULES` entry forbids.

Adding a rule is adding a :class:`Rule` to :data:`RULES`, e.g.::

    Rule("harness.workload.*", "vm.machine", "workloads reach a VM through harness/target/")
    Rule(STUDIES, STUDIES, "a study never imports another", apart=True)
    Rule("harness", "vm.machine", "only the VM target boots QEMU", unless="harness.target")

The checker itself is tested below on a planted package tree.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "vm", "harness")

Pattern = str | tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    """Modules matching ``importer`` must not import modules matching ``imported``.

    A pattern is a dotted module name whose parts may be ``fnmatch`` globs over one name
    (``harness.workload.*``, ``harness.[!_]*``); a module matches when its leading parts do,
    so ``vm`` stands for ``vm`` and everything under it, and ``vm!`` for the package ``vm``
    alone (``from vm import Machine``: a name the package re-exports). A tuple of patterns
    matches when any does. With ``apart``, the rule applies only between modules under
    different matches (``harness.hot`` may import ``harness.hot.render``, not
    ``harness.compress``). Importers matching ``unless`` are exempt.
    """

    importer: Pattern
    imported: Pattern
    why: str
    apart: bool = False
    unless: Pattern = ()


# the study packages (ARCHITECTURE.md, "studies")
STUDIES: tuple[str, ...] = (
    "harness.compress",
    "harness.etv2",
    "harness.ext4",
    "harness.hot",
    "harness.mount",
    "harness.report",
    "harness.workload",
)

# ARCHITECTURE.md, "The rooms and who may touch what"
RULES: tuple[Rule, ...] = (
    Rule("model", ("vm", "harness"), "model/ is the pure executable spec"),
    Rule("vm", ("model", "harness"), "vm/ knows QEMU and kernels, not filesystems or studies"),
    # the stress family reaches a kernel only through the Target seam (harness/target/)
    Rule(
        "harness.workload.*", ("vm.machine", "vm"), "workloads reach a VM through harness/target/"
    ),
    # QEMU is reached through the Target seam; `vm!` is `from vm import Machine` (re-exports)
    Rule(
        "harness",
        ("vm.machine", "vm!"),
        "only harness/target/ boots QEMU machines: import vm's modules by name",
        unless="harness.target",
    ),
    # a study is one room: what two studies share lives at the top of harness/
    Rule(STUDIES, STUDIES, "a study never imports another", apart=True),
)

# Cycles that exist today, each given by its modules. Each must still be a cycle (the test
# fails once it is gone, so take it off the list then); a new cycle, or a module joining one
# of these, fails the test.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


# ---------------------------------------------------------------- the checker


@dataclass(frozen=True, order=True)
class Edge:
    importer: str
    imported: str
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Every module under ``root/<package>``, by dotted name."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(root, path)] = path
    return out


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific module of ours that ``name`` (a dotted name) is, or lies in."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The edges from ``module`` to modules of ours, one per name imported."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    edges: list[Edge] = []

    def add(name: str | None, line: int) -> None:
        target = _ours(name, modules) if name else None
        if target is not None:
            edges.append(Edge(module, target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                up = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                add(sub if alias.name != "*" and sub in modules else base, node.lineno)
    return edges


def import_graph(root: Path, packages: Sequence[str]) -> list[Edge]:
    modules = find_modules(root, packages)
    return sorted(e for m, p in modules.items() for e in imports_of(m, p, modules))


def _components(nodes: Iterable[str], succ: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(succ.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def _a_cycle(comp: list[str], succ: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, as a path back to it."""
    start = comp[0]
    inside = set(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            for w in sorted(succ.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w in inside and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {comp}")


def find_cycles(edges: Sequence[Edge]) -> list[tuple[frozenset[str], list[str]]]:
    """Each import cycle: its modules and one cycle through them as a path."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.importer, set()).add(e.imported)
    nodes = {e.importer for e in edges} | {e.imported for e in edges}
    out = []
    for comp in _components(nodes, succ):
        if len(comp) > 1 or comp[0] in succ.get(comp[0], ()):
            out.append((frozenset(comp), _a_cycle(comp, succ)))
    return out


def cycle_problems(edges: Sequence[Edge], known: Sequence[frozenset[str]] = ()) -> list[str]:
    """One line per cycle not covered by ``known``, and per ``known`` entry that is no
    longer a cycle."""
    problems: list[str] = []
    cycles = find_cycles(edges)
    for members, path in cycles:
        covered = [k for k in known if k <= members]
        if not covered or frozenset().union(*covered) != members:
            problems.append("import cycle: " + " -> ".join(path) + _more(members, path))
    for k in known:
        if not any(k <= members for members, _path in cycles):
            problems.append(
                "known cycle " + " <-> ".join(sorted(k)) + " is gone: take it off KNOWN_CYCLES"
            )
    return sorted(problems)


def _more(members: frozenset[str], path: list[str]) -> str:
    rest = sorted(members - set(path))
    return f" (in one group with {', '.join(rest)})" if rest else ""


def _match(pattern: Pattern, module: str) -> str | None:
    """The leading part of ``module`` that ``pattern`` matches (None: no match)."""
    for p in (pattern,) if isinstance(pattern, str) else pattern:
        exact = p.endswith("!")
        want = p.removesuffix("!").split(".")
        got = module.split(".")
        if exact and len(got) != len(want):
            continue
        if len(got) >= len(want) and all(
            fnmatch.fnmatchcase(g, w) for g, w in zip(got, want, strict=False)
        ):
            return ".".join(got[: len(want)])
    return None


def rule_problems(edges: Sequence[Edge], rules: Sequence[Rule], root: Path) -> list[str]:
    """One line per import a rule forbids: where, what, which rule."""
    problems: list[str] = []
    for e in edges:
        for r in rules:
            a = _match(r.importer, e.importer)
            b = _match(r.imported, e.imported)
            if a is None or b is None or (r.apart and a == b):
                continue
            if _match(r.unless, e.importer) is not None:
                continue
            where = e.importer.replace(".", "/")
            path = f"{where}/__init__.py" if (root / where).is_dir() else f"{where}.py"
            problems.append(f"{path}:{e.line}: {e.importer} imports {e.imported} ({r.why})")
    return sorted(problems)


# ---------------------------------------------------------------- the tests


@functools.cache
def project_graph() -> tuple[Edge, ...]:
    return tuple(import_graph(ROOT, PACKAGES))


def test_no_import_cycles_but_the_known_ones() -> None:
    problems = cycle_problems(project_graph(), KNOWN_CYCLES)
    assert not problems, "\n".join(problems)


def test_layering_rules() -> None:
    problems = rule_problems(project_graph(), RULES, ROOT)
    assert not problems, "\n".join(problems)


def test_the_scan_sees_every_module_and_imports_inside_functions() -> None:
    # counted from the file system, not from the checker
    on_disk = {p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    assert set(find_modules(ROOT, PACKAGES).values()) == on_disk
    edges = {(e.importer, e.imported) for e in project_graph()}
    # vm/machine.py imports vm.shell inside interactive_shell(), nowhere else
    assert ("vm.machine", "vm.shell") in edges
    # harness/target/vm.py: `from vm.machine import Machine, MachineConfig` in a method
    assert ("harness.target.vm", "vm.machine") in edges
    # and `from harness.workload import driver as drv` names a module
    assert ("harness.workload.sequences", "harness.workload.driver") in edges


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


PLANTED = {
    "model/__init__.py": "",
    "model/a.py": "import os\nfrom model import b\n",
    "model/b.py": "def f():\n    from model.c import g\n    return g\n",
    "model/c.py": "from . import a\n\ndef g():\n    pass\n",
    "model/d.py": "from model.a import x\n",  # imports a cycle member, is in none
    "model/e.py": "import vm\n",  # the package itself
    "vm/__init__.py": "",
    "vm/ok.py": "import json\nfrom vm import ok2\n",
    "vm/ok2.py": "",
    "vm/bad.py": "import sys\n\n\ndef h():\n    import harness.study.run\n",
    "harness/__init__.py": "",
    "harness/study/__init__.py": "",
    "harness/study/run.py": (
        "from model.a import x\nfrom vm import ok\nfrom harness.other import y\n"
    ),
    "harness/other.py": "from .study import run\n",
    "harness/pkguse.py": "from vm import Thing\n",  # a name the package re-exports
}


def test_checker_finds_a_planted_cycle_and_layering_break(tmp_path: Path) -> None:
    _plant(tmp_path, PLANTED)
    edges = import_graph(tmp_path, PACKAGES)
    # each through an import inside a function or a relative one
    assert cycle_problems(edges) == [
        "import cycle: harness.other -> harness.study.run -> harness.other",
        "import cycle: model.a -> model.b -> model.c -> model.a",
    ]
    assert rule_problems(edges, RULES, tmp_path) == [
        "harness/pkguse.py:1: harness.pkguse imports vm "
        "(only harness/target/ boots QEMU machines: import vm's modules by name)",
        "model/e.py:1: model.e imports vm (model/ is the pure executable spec)",
        "vm/bad.py:5: vm.bad imports harness.study.run "
        "(vm/ knows QEMU and kernels, not filesystems or studies)",
    ]


def test_known_cycles_cover_exactly_and_must_still_exist(tmp_path: Path) -> None:
    _plant(tmp_path, PLANTED)
    edges = import_graph(tmp_path, PACKAGES)
    harness_cycle = frozenset({"harness.other", "harness.study.run"})
    model_cycle = frozenset({"model.a", "model.b", "model.c"})
    assert cycle_problems(edges, [harness_cycle, model_cycle]) == []
    # a known cycle that is only part of a group does not cover it
    assert cycle_problems(edges, [harness_cycle, frozenset({"model.a", "model.b"})]) == [
        "import cycle: model.a -> model.b -> model.c -> model.a"
    ]
    # a listed cycle that is gone
    gone = frozenset({"vm.ok", "vm.ok2"})
    assert cycle_problems(edges, [harness_cycle, model_cycle, gone]) == [
        "known cycle vm.ok <-> vm.ok2 is gone: take it off KNOWN_CYCLES"
    ]


def test_rules_are_data_with_globs_and_apart(tmp_path: Path) -> None:
    _plant(tmp_path, PLANTED)
    edges = import_graph(tmp_path, PACKAGES)
    rules = [
        Rule("harness.*", "vm.ok", "studies reach vm through a seam"),
        Rule(
            ("harness.study", "harness.other"),
            ("harness.study", "harness.other"),
            "no study imports another",
            apart=True,
        ),
        Rule("harness", "vm!", "the package alone", unless="harness.other"),
        Rule("harness", "vm", "vm outside harness.study", unless="harness.study"),
    ]
    assert rule_problems(edges, rules, tmp_path) == [
        "harness/other.py:1: harness.other imports harness.study.run (no study imports another)",
        "harness/pkguse.py:1: harness.pkguse imports vm (the package alone)",
        "harness/pkguse.py:1: harness.pkguse imports vm (vm outside harness.study)",
        "harness/study/run.py:2: harness.study.run imports vm.ok (studies reach vm through a seam)",
        "harness/study/run.py:3: harness.study.run imports harness.other "
        "(no study imports another)",
    ]
