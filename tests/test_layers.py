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
    ("kit.metric", "kit.predset"),  # MAP@5 and submissions; the prediction-set contract
    ("kit.train", "kit.export"),
    ("kit.post",),
    ("kit.tune",),
    ("kit.report",),
    ("kit.starter", "kit.demo"),  # the orchestrators
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


def test_the_check_sees_an_import_that_runs_back_up(tmp_path, monkeypatch):
    fake = tmp_path / "kit"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from kit.post.pipeline import run\n")
    monkeypatch.setattr(sys.modules[__name__], "KIT", fake)
    assert imports_up() == ["kit/data/x.py:2: kit.data.x imports kit.post.pipeline, a layer above"]
