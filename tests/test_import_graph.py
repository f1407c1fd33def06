"""The package's import graph, read from the source (every `import`, including those inside
functions): no cycles between modules, and dependencies only point down the layers

    nn, data, runtime, files, compiler_options, parallel  <-  models
    <-  objectives, augment, evaluate  <-  systems  <-  train  <-  stages  <-  main

(a module may import from its own layer or a lower one)."""

import ast
import os

import pytest

PACKAGE = "ilsgan_jax"
PACKAGE_DIR = os.path.join(os.path.dirname(__file__), os.pardir, PACKAGE)
LAYERS = {
    "nn": 0,
    "data": 0,
    "runtime": 0,
    "files": 0,
    "compiler_options": 0,
    "parallel": 0,
    "__init__": 0,
    "models": 1,
    "objectives": 2,
    "augment": 2,
    "evaluate": 2,
    "systems": 3,
    "train": 4,
    "stages": 5,
    "main": 6,
}


def module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))
    name = relative[: -len(".py")].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def package_modules() -> dict[str, str]:
    """{dotted module name: file path} of every module of the package."""
    modules = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(root, file)
                modules[module_name(path)] = path
    return modules


def imported_modules(path: str, name: str, modules: dict[str, str]) -> set[str]:
    """The package modules that the file imports anywhere (module level or inside functions);
    `from a.b import c` counts as `a.b.c` if that is a module, else as `a.b`."""
    with open(path) as file:
        tree = ast.parse(file.read(), filename=path)
    is_package = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = name.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    parts = name.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def test_every_top_level_part_has_a_layer(graph):
    unknown = {name.split(".")[1] for name in graph if "." in name} - set(LAYERS)
    assert not unknown, f"add these to LAYERS: {sorted(unknown)}"


def test_dependencies_point_down_the_layers(graph):
    violations = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not violations, "\n".join(violations)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a chain of modules (depth-first search), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name, chain):
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return (
                    chain[chain.index(target) :] + [target] if target in chain else [name, target]
                )
            if state.get(target) is None:
                cycle = visit(target, chain + [target])
                if cycle:
                    return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if state.get(name) is None:
            cycle = visit(name, [name])
            if cycle:
                return cycle
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    """The reader itself: a function-level relative import and an absolute one are found."""
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from .models import layered\n    import ilsgan_jax.train.step\n"
    )
    modules = {
        "ilsgan_jax.models.layered": "",
        "ilsgan_jax.train.step": "",
        "ilsgan_jax.models": "",
    }
    found = imported_modules(str(source), "ilsgan_jax.probe", modules)
    assert found == {"ilsgan_jax.models.layered", "ilsgan_jax.train.step"}
