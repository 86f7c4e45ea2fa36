"""The package's own imports form an acyclic graph, imports inside function bodies included.

Every ``import`` / ``from ... import`` anywhere in a module is an edge; a package ``__init__`` is
a module of its own, and ``from pkg import name`` is an edge to ``pkg`` (plus one to ``pkg.name``
where that is a module), so a module that imports its own package counts too.

At import time (module-level imports only) the graph also has an edge to each package whose
``__init__`` an import runs (``from pkg.sub.mod import x`` runs ``pkg/sub/__init__.py``); it is
acyclic too. So the package's imports go at module level; one kept inside a function says why
with ``# lazy: <reason>`` on its line.
"""

import ast
import importlib
import itertools
import pathlib
import re
import sys

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "keras_csp"

KNOWN_CYCLES = []  # none: every cycle found is a failure

LAZY_COMMENT = re.compile(r"#\s*lazy:\s*\S")  # ``# lazy: <reason>`` on an import kept inside a function


def find_modules(package_dir):
    """Map dotted module name -> path for every ``.py`` file under ``package_dir``."""
    package_dir = pathlib.Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package_dir.name,) + path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name, modules):
    """The module an imported dotted name lands in (the longest known prefix), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _import_targets(node, package):
    """The dotted names an import node names (``from pkg import mod`` runs pkg/__init__ first,
    then mod: both), relative imports resolved against ``package``; [] for other nodes."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(package_dir):
    """Map module -> {imported module: line} for the package's imports of itself."""
    modules = find_modules(package_dir)
    graph = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _import_targets(node, package):
                target = _resolve(target, modules)
                if target and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph, modules


def _module_level_nodes(node):
    """The nodes that run when the module is imported: all but those inside function bodies."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _module_level_nodes(child)


def import_time_graph(package_dir):
    """Map module -> {module: line} of what importing it runs: its module-level imports (none
    inside functions), each with an edge to every package whose ``__init__`` it runs on the way
    (``from pkg.sub.mod import x`` runs ``pkg.sub`` first, unless the importer is inside it).

    The edges ``import_graph`` does not have: a module importing ``keras_csp.darknet.order`` at
    module level runs ``keras_csp/darknet/__init__.py`` and everything that imports."""
    modules = find_modules(package_dir)
    graph = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        enclosing = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        for node in _module_level_nodes(ast.parse(path.read_text(), filename=str(path))):
            for target in _import_targets(node, package):
                target = _resolve(target, modules)
                if not target:
                    continue
                parts = target.split(".")
                for run in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
                    if run in modules and run not in enclosing:
                        graph[name].setdefault(run, node.lineno)
    return graph, modules


def strongly_connected(graph):
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for succ in edges:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(frozenset(component))
    return components


def example_cycle(graph, component):
    """One closed chain of imports inside ``component``, found breadth first from its smallest module."""
    start = min(component)
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ not in component:
                continue
            if succ == start:
                chain = [node]
                while previous[chain[-1]] is not None:
                    chain.append(previous[chain[-1]])
                return chain[::-1] + [start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")


def describe_cycles(graph, modules, components):
    """Text naming each cycle's modules and one example chain, with file:line of each import."""
    lines = []
    for component in sorted(components, key=sorted):
        chain = example_cycle(graph, component)
        lines.append(f"{len(component)} modules: {', '.join(sorted(component))}")
        for a, b in itertools.pairwise(chain):
            where = modules[a].relative_to(modules[a].parents[len(a.split(".")) - (modules[a].name != "__init__.py")])
            lines.append(f"    {a} -> {b}  ({where}:{graph[a][b]})")
    return "\n".join(lines)


def test_package_imports_are_acyclic():
    graph, modules = import_graph(PACKAGE_DIR)
    assert len(modules) > 50, "the package was not found"
    cycles = [c for c in strongly_connected(graph) if c not in KNOWN_CYCLES]
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n{describe_cycles(graph, modules, cycles)}", pytrace=False)


def test_package_imports_are_acyclic_at_import_time():
    """The same with the package ``__init__`` files each import runs: a cycle here is an ImportError
    (a partially initialized module) for whichever of its modules is imported first."""
    graph, modules = import_time_graph(PACKAGE_DIR)
    cycles = strongly_connected(graph)
    if cycles:
        pytest.fail(f"{len(cycles)} import-time cycle(s):\n{describe_cycles(graph, modules, cycles)}", pytrace=False)


def test_checker_finds_a_cycle_through_a_package_init(tmp_path, monkeypatch):
    """``toy.b.y`` imports ``toy.a.z``, which runs ``toy/a/__init__``, which imports ``toy.a.x``,
    which imports ``toy.b.y``: no cycle between the modules named, one at import time."""
    package = tmp_path / "toy"
    for sub in ("a", "b"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("from toy.a.x import f\n")
    (package / "a" / "x.py").write_text("from toy.b.y import g\n\ndef f():\n    pass\n")
    (package / "a" / "z.py").write_text("def h():\n    import toy.b\n")  # inside a function: not at import time
    (package / "b" / "y.py").write_text("from toy.a.z import h\n\ndef g():\n    pass\n")
    graph, modules = import_time_graph(package)
    assert graph["toy.b.y"] == {"toy.a": 1, "toy.a.z": 1}
    assert graph["toy.a.x"] == {"toy.b": 1, "toy.b.y": 1}
    assert graph["toy.a.z"] == {}
    cycles = strongly_connected(graph)
    assert cycles == [frozenset({"toy.a", "toy.a.x", "toy.b.y"})]
    assert "toy.b.y -> toy.a " in describe_cycles(graph, modules, cycles)
    assert strongly_connected(import_graph(package)[0]) == []  # the modules named alone: no cycle
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ImportError, match="partially initialized"):
            importlib.import_module("toy.b.y")
    finally:
        for name in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
            del sys.modules[name]


def test_checker_finds_a_cycle_made_inside_a_function(tmp_path):
    """A synthetic package whose only cycle goes through a function body and its own ``__init__``."""
    package = tmp_path / "toy"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from toy.a import f\n")
    (package / "a.py").write_text("def f():\n    from .sub import helper\n    return helper\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "helper.py").write_text("import toy\n")
    (package / "b.py").write_text("from toy import a\n")
    graph, modules = import_graph(package)
    assert graph["toy.a"] == {"toy.sub": 2, "toy.sub.helper": 2}
    assert graph["toy.b"] == {"toy": 1, "toy.a": 1}
    cycles = strongly_connected(graph)
    assert cycles == [frozenset({"toy", "toy.a", "toy.sub.helper"})]
    text = describe_cycles(graph, modules, cycles)
    assert "toy -> toy.a" in text and "toy.a -> toy.sub.helper" in text and "toy.sub.helper -> toy" in text


def unexplained_lazy_imports(package_dir):
    """``path:line: import`` of each import of the package itself inside a function body whose
    lines carry no ``# lazy: <reason>`` comment (the package's imports go at module level)."""
    package_dir = pathlib.Path(package_dir)
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        seen, here = set(), []
        for function in ast.walk(ast.parse(text, filename=str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if id(node) in seen:
                    continue
                if isinstance(node, ast.Import):
                    ours = any(a.name.split(".")[0] == package_dir.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    ours = bool(node.level) or (node.module or "").split(".")[0] == package_dir.name
                else:
                    continue
                seen.add(id(node))
                if ours and not any(LAZY_COMMENT.search(line) for line in lines[node.lineno - 1:node.end_lineno]):
                    here.append((node.lineno, ast.unparse(node)))
        found.extend(f"{path.relative_to(package_dir.parent)}:{line}: {code}" for line, code in sorted(here))
    return found


def test_package_imports_inside_functions_say_why():
    """The package's own imports are at module level; one kept inside a function says why on its
    line with ``# lazy: <reason>`` (a command-line module keeping a heavy sub-command off
    ``--help``, a module that imports an optional dependency, an import-time cycle)."""
    found = unexplained_lazy_imports(PACKAGE_DIR)
    if found:
        pytest.fail(f"{len(found)} import(s) of keras_csp inside functions without a '# lazy: <reason>' comment "
                    "(move them to the top of the module):\n    " + "\n    ".join(found), pytrace=False)


def test_lazy_import_check_on_a_toy_package(tmp_path):
    """Imports of the package (absolute or relative) in functions and methods, with or without a reason."""
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nfrom toy import a\n")
    (package / "a.py").write_text(
        "def f():\n    import json\n    from toy import b\n    from . import c  # lazy: optional dependency\n"
        "    from .b import (\n        g,\n    )\n    return b, c, g, json\n"
    )
    (package / "b.py").write_text(
        "class K:\n    def m(self):\n        import toy.c\n        return toy\n\n"
        "def h():\n    import toy.c  # lazy:\n    return toy\n"
    )
    (package / "c.py").write_text("")
    assert unexplained_lazy_imports(package) == [
        "toy/a.py:3: from toy import b",
        "toy/a.py:5: from .b import g",
        "toy/b.py:3: import toy.c",
        "toy/b.py:7: import toy.c",  # a reason is needed after "lazy:"
    ]
