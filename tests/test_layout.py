"""The layout: imports flow one way. Library modules (one concept each) never import a script, and no
two modules import each other, directly or through others, at module level or inside a function."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"train", "evaluate", "analyze", "report", "experiments", "bench", "export", "synth", "test_smoke",
           "measure_page"}
LIBRARIES = {"cli", "device", "images", "augment", "composite", "corrections", "data", "model", "checkpoint",
             "meters", "stats", "unlabeled", "page", "sweep"}


def project_imports():
    """{module: the project modules it imports anywhere in its file}."""
    modules = {p.stem: p for p in REPO.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
        graph[name] = found & set(modules) - {name}
    return graph


def test_every_top_level_module_is_classified():
    assert set(project_imports()) == SCRIPTS | LIBRARIES


def test_libraries_import_no_script():
    graph = project_imports()
    assert {m: graph[m] & SCRIPTS for m in LIBRARIES if graph[m] & SCRIPTS} == {}


def test_no_import_cycle():
    graph, state, cycles = project_imports(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
