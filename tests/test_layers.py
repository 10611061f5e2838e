"""The layers run one way: a module imports only from its own layer or those below, at module level
or inside a function alike. Post-processing is also light (tests/post/test_light.py)."""
import ast
import sys
from pathlib import Path

KIT = Path(__file__).resolve().parents[1] / "kit"

# lowest first; a package's modules share its layer
LAYERS = [
    ("kit", "kit.errors", "kit.io", "kit.cli", "kit.progress"),  # shared helpers
    ("kit.data",),  # competitions, folds, images, crops, phash
    ("kit.metric", "kit.metrics", "kit.ranking", "kit.predset"),  # MAP@5, the metric plug-ins, submissions, top-5 lists; the prediction-set contract
    ("kit.train",),
    ("kit.export",),  # runs what train made
    ("kit.post",),
    ("kit.local",),  # the matcher: its member's shortlist is a blend's ranking
    ("kit.tune",),
    ("kit.report",),
    ("kit.starter", "kit.pretrained", "kit.demo", "kit.rounds", "kit.gains", "kit.testing"),  # the orchestrators; the fabricators for tests and CI
    ("kit.bench",),  # measures every floor below; only scripts/bench.py imports it
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER:
            return LAYER[".".join(parts[:n])]
    raise AssertionError(f"{module}: in no layer; add it to LAYERS")


def imports_up() -> list[str]:
    found = []
    for path in sorted(KIT.rglob("*.py")):
        module = ".".join(path.relative_to(KIT.parent).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.split(".")[0] == "kit" and layer_of(name) > own:
                    found.append(f"{path.relative_to(KIT.parent)}:{node.lineno}: {module} imports {name}, a layer above")
    return found


def test_imports_never_run_back_up_the_flow():
    assert imports_up() == []


def circles(root: Path | None = None) -> list[list[str]]:
    """Modules that import each other, directly or around a loop (any import, at the top or in a
    function): each strongly connected group of the import graph with more than one module."""
    root = root or KIT
    mods = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                graph[m] |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names}
    graph = {m: {t for t in targets if t in mods and t != m} for m, targets in graph.items()}
    order, low, stack, found = {}, {}, [], []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return sorted(found)


def test_no_module_imports_its_importer():
    assert circles() == []


def test_the_check_sees_a_circle(tmp_path):
    fake = tmp_path / "kit"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "a.py").write_text("from kit.train.b import x\n")
    (fake / "train" / "b.py").write_text("def f():\n    from kit.train.c import y\n")
    (fake / "train" / "c.py").write_text("import kit.train.a\n")
    assert circles(fake) == [["kit.train.a", "kit.train.b", "kit.train.c"]]


def test_the_check_sees_an_import_that_runs_back_up(tmp_path, monkeypatch):
    fake = tmp_path / "kit"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from kit.post.pipeline import run\n")
    monkeypatch.setattr(sys.modules[__name__], "KIT", fake)
    assert imports_up() == ["kit/data/x.py:2: kit.data.x imports kit.post.pipeline, a layer above"]


# Imports inside a function are for the heavy packages only (and modules that import them), so
# post-processing and tuning stay light; fcntl exists on POSIX alone.
HEAVY = {"torch", "timm", "torchvision", "onnx", "onnxruntime", "onnxscript", "optuna", "sqlalchemy",
         "huggingface_hub", "cv2"}  # timm's hub, for its weight cache; OpenCV, the matcher's
PLATFORM = {"fcntl"}


def _modules(root: Path) -> dict[str, ast.Module]:
    return {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): ast.parse(p.read_text())
            for p in root.rglob("*.py")}


def _top_level_imports(tree: ast.Module, mods: dict) -> list[str]:
    out = []
    for node in tree.body:
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, ast.Import):
                out += [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                out += [n.module] + [f"{n.module}.{a.name}" for a in n.names if f"{n.module}.{a.name}" in mods]
    return out


def light_imports_in_functions(root: Path = KIT) -> list[str]:
    mods, memo = _modules(root), {}

    def heavy(name: str, seen: tuple = ()) -> bool:
        if name.split(".")[0] in HEAVY:
            return True
        if name not in mods or name in seen:
            return False
        if name not in memo:
            parts = name.split(".")
            parents = [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in mods]
            memo[name] = any(heavy(m, seen + (name,)) for m in _top_level_imports(mods[name], mods) + parents)
        return memo[name]

    found = []
    for name, tree in sorted(mods.items()):
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                               for a in node.names]
                else:
                    continue
                found += [f"{name}:{node.lineno}: {fn.name} imports {t} inside the function; import it at the top"
                          for t in targets if not heavy(t) and t.split(".")[0] not in PLATFORM]
    return found


def test_imports_inside_functions_are_for_heavy_packages_only():
    assert light_imports_in_functions() == []


def test_the_check_sees_a_light_import_inside_a_function(tmp_path):
    fake = tmp_path / "kit"
    fake.mkdir()
    (fake / "a.py").write_text("import torch\n")
    (fake / "b.py").write_text("def f():\n    import json\n    from kit.a import x\n    import optuna\n")
    assert light_imports_in_functions(fake) == ["kit.b:2: f imports json inside the function; import it at the top"]
