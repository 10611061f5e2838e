"""The report opens in a real headless Chromium from a file URL: no console error, every section shown."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import numpy as np
import yaml

from kit.data import load_competition
from kit.data.folds import make_folds, split, write_folds
from kit.data.phash import write_hashes
from kit.predset import PredictionSet

SECTIONS = ("members", "calibration", "ablation", "threshold", "optuna", "scores", "gallery")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def noisy_member(model_dir: Path, comp, images_by_split, truth_by_split, noise: float, seed: int) -> None:
    """Logit prediction sets that put a signal on each image's true identity, plus noise."""
    rng = np.random.default_rng(seed)
    classes = comp.known_labels
    col = {c: j for j, c in enumerate(classes)}
    for sp, images in images_by_split.items():
        scores = rng.normal(0, noise, (len(images), len(classes))).astype(np.float32)
        for i, label in enumerate(truth_by_split[sp]):
            if label in col:
                scores[i, col[label]] += 3.0
        meta = {"kind": "logit", "activation": "softmax", "model": model_dir.name, "split": sp, "fold": 0}
        PredictionSet(scores, list(images), classes, meta).save(model_dir / "preds" / "logit" / sp)


@pytest.fixture(scope="module")
def blended(tmp_path_factory):
    from kit.data.synthetic import generate

    root = tmp_path_factory.mktemp("report")
    data = generate(root / "data", size="tiny", seed=1, progress=False)
    comp = load_competition(data)
    folds = make_folds(comp.train, comp.unknown, n_folds=2)
    write_folds(data / "folds.csv", folds)
    write_hashes(comp, data / "hashes.csv")
    _, val = split(folds, 0)
    truth = dict(zip(comp.truth["image"], comp.truth["label"]))
    images = {"val": val["image"].tolist(), "test": comp.test_images}
    labels = {"val": val["label"].tolist(), "test": [truth[i] for i in comp.test_images]}
    members = []
    for i, noise in enumerate((1.0, 1.3)):
        noisy_member(root / f"m{i}", comp, images, labels, noise, seed=i)
        members.append({"model": str(root / f"m{i}"), "view": "logit", "weight": 1.0})
    recipe = root / "blend.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "blend", "data": str(data), "fold": 0, "members": members,
        "steps": {"leak": {"max_distance": 4}, "new_whale": {"threshold": 0.5}, "balance": {"margin": 0.3, "min_count": 2}},
        "output": str(root / "out")}))
    out = subprocess.run([sys.executable, "scripts/blend.py", str(recipe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return root / "out" / "blend.html"


def test_report_is_self_contained(blended):
    html = blended.read_text()
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in html
    outside = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in outside and "https://" not in outside  # nothing fetched from a network
    assert "<script" not in html
    assert "data:image/jpeg;base64," in html  # the gallery's images travel inside the file


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (the OS package) to run the browser test")
def test_report_in_chromium(blended, tmp_path):
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(offline=True)  # no network needed to view it
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(blended.as_uri())
        for anchor in SECTIONS:
            assert page.locator(f"section#{anchor} h2").is_visible()
        assert page.locator("svg.chart").count() >= 3
        images = page.locator("table.gallery img")
        assert images.count() > 0
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)  # kept out of the repo
        browser.close()
    assert errors == []
