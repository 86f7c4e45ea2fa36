"""The package's own imports form an acyclic graph, imports inside function bodies included.

Every ``import`` / ``from ... import`` anywhere in a module is an edge; a package ``__init__`` is
a module of its own, and ``from pkg import name`` is an edge to ``pkg`` (plus one to ``pkg.name``
where that is a module), so a module that imports its own package counts too.
"""

import ast
import itertools
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1] / "keras_csp"

KNOWN_CYCLES = []  # none: every cycle found is a failure


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


def import_graph(package_dir):
    """Map module -> {imported module: line} for the package's imports of itself."""
    modules = find_modules(package_dir)
    graph = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # ``from pkg import mod`` runs pkg/__init__ first, then mod: an edge to each.
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                target = _resolve(target, modules)
                if target and target != name:
                    graph[name].setdefault(target, node.lineno)
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
