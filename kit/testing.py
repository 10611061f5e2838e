"""Fabricated competitions and members, small and seeded, for the tests and the CI checks.

- `make_competition`: a competition directory with image files (random noise, or drawn flukes a
  network can learn: `LEARNABLE`), in any Kaggle layout or AnimalCLEF's, optionally with boxes and folds.csv.
- `make_label_competition` / `make_tuning_competition`: a humpback-layout directory without image
  files (prepare() never opens them): labels, the test truth, folds.csv and hashes.csv with planted
  duplicates; `write_predictions` adds members' prediction sets made from noisy copies of the truth.
- `make_member` / `make_oof_member`: trained-member directories written by kit.train's own
  checkpoint code (untrained weights: export does not care how good they are).
- `kaggle_scale_project`: the 2019 competition's size (no image files) and three members, for the
  benchmarks (kit/bench/post.py, tune.py), never for the test suite.

Torch is imported inside the member functions only: the light install runs the rest.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from kit.config import dump_yaml
from kit.data.competition import LAYOUTS, load_competition
from kit.data.folds import make_folds, read_folds, split, write_folds
from kit.data.synthetic_animalclef import DATASETS
from kit.io import write_text
from kit.predset import PredictionSet
from kit.train.recipe import ALL_FOLDS, fold_dir, load_recipe, recipe_from_dict, save_recipe

UNKNOWN = "new_whale"
LAYOUT = {layout.name: layout for layout in LAYOUTS}
CLEF_DATASETS = tuple(DATASETS)  # make_competition's AnimalCLEF datasets


# ------------------------------------------------------------------- competitions with image files
def draw_whale(rng: np.random.Generator, identity: int | None, size=(48, 96)) -> Image.Image:
    """A 'fluke' with an identity-specific colour and stripe count, jittered per photo."""
    h, w = size
    sea = tuple(int(v) for v in rng.integers(20, 90, 3))
    im = Image.new("RGB", (w, h), sea)
    d = ImageDraw.Draw(im)
    ident = identity if identity is not None else int(rng.integers(100, 10_000))
    colour = tuple(int(v) for v in np.random.default_rng(ident).integers(90, 255, 3))
    stripes = 1 + ident % 5
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    d.rectangle([8 + dx, 8 + dy, w - 8 + dx, h - 8 + dy], fill=colour)
    for s in range(stripes):
        x = 12 + dx + s * (w - 24) // stripes
        d.rectangle([x, 10 + dy, x + 3, h - 10 + dy], fill=(0, 0, 0))
    return im


def make_competition(root: Path, layout: str = "humpback", *, n_ids: int = 6, per_id: int = 3, n_unknown: int = 4,
                     n_test: int = 5, boxes: bool = False, folds: int = 0, seed: int = 0, drawn: bool = False,
                     size: tuple[int, int] = (24, 48), grey: bool = False, box_margins=(2, 3, 8, 4),
                     image_digits: int = 5, label_format: str = "w_{:07x}",
                     species: tuple[str, ...] = ("humpback_whale",)) -> Path:
    """A valid competition directory: `n_ids` identities of `per_id` images each, `n_unknown` unknown
    ones and `n_test` test images of `size` (H, W). `drawn`: flukes a network can learn (test image i
    shows identity i mod n_ids), else random noise. `boxes`: every image's box is the photo less
    `box_margins` (left, top, right, bottom). `folds` > 0 also writes folds.csv. Names: images
    tr00000.jpg (`image_digits` wide), identities `label_format` of 0, 1, .... Happywhale layout:
    identity i (and unknown image i) of `species[i % len(species)]`. AnimalCLEF layout (metadata.csv):
    image ids 0, 1, ... (train, then test) at images/<dataset>/<database|query>/<the file name>, the
    unknown images identities seen once (`label_format` of n_ids, n_ids + 1, ...), identity i (and test
    image i) of dataset `CLEF_DATASETS[i % 3]`."""
    spec = LAYOUT[layout]
    clef = spec.listing == "metadata.csv"
    rng = np.random.default_rng(seed)
    labels = [label_format.format(i) for i in range(n_ids) for _ in range(per_id)] + [spec.unknown] * n_unknown
    train_idents = [i for i in range(n_ids) for _ in range(per_id)] + [None] * n_unknown
    train_images = [f"tr{i:0{image_digits}d}.jpg" for i in range(len(labels))]
    test_images = [f"te{i:0{image_digits}d}.jpg" for i in range(n_test)]
    test_idents = [i % n_ids for i in range(n_test)]
    if clef:  # the unknown train images: identities of their own; image ids for names, files in sub-folders
        labels[n_ids * per_id:] = [label_format.format(n_ids + k) for k in range(n_unknown)]
        groups = [i for i in range(n_ids) for _ in range(per_id)] + [n_ids + k for k in range(n_unknown)] + test_idents
        dataset = [CLEF_DATASETS[g % len(CLEF_DATASETS)] for g in groups]
        names = [str(i) for i in range(len(train_images) + n_test)]
        files = [f"images/{d}/{'database' if i < len(train_images) else 'query'}/{n}"
                 for i, (d, n) in enumerate(zip(dataset, train_images + test_images))]
    else:
        names = train_images + test_images
        files = [f"{spec.train_dir}/{n}" for n in train_images] + [f"{spec.test_dir}/{n}" for n in test_images]
    root.mkdir(parents=True, exist_ok=True)
    if not clef:
        (root / spec.train_dir).mkdir(exist_ok=True)
        (root / spec.test_dir).mkdir(exist_ok=True)
    h, w = size
    for file, ident in zip(files, train_idents + test_idents):
        im = draw_whale(rng, ident, size) if drawn else Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (im.convert("L") if grey else im).save(root / file)
    n_train = len(train_images)
    if clef:
        split = ["database"] * n_train + ["query"] * n_test
        pd.DataFrame({"image_id": names, "identity": labels + [""] * n_test, "path": files, "split": split,
                      "species": [DATASETS[d] for d in dataset], "dataset": dataset}).to_csv(root / "metadata.csv", index=False)
    else:
        image_col, label_col = spec.train_columns
        train = pd.DataFrame({image_col: train_images, label_col: labels})
        if layout == "happywhale":
            ranks = [i for i in range(n_ids) for _ in range(per_id)] + list(range(n_unknown))
            train.insert(1, "species", [species[i % len(species)] for i in ranks])
        train.to_csv(root / "train.csv", index=False)
    sub_image, sub_pred = spec.submission_columns
    pd.DataFrame({sub_image: names[n_train:], sub_pred: spec.unknown}).to_csv(root / "sample_submission.csv", index=False)
    if boxes:
        left, top, right, bottom = box_margins
        pd.DataFrame({"Image": names, "x0": left, "y0": top, "x1": w - right,
                      "y1": h - bottom}).to_csv(root / "bounding_boxes.csv", index=False)
    if folds:
        comp = load_competition(root)
        write_folds(root / "folds.csv", make_folds(comp.train, comp.unknown, n_folds=folds, seed=seed))
    return root


# drawn flukes that a tiny network learns in a few steps, with boxes and two folds
LEARNABLE = dict(n_ids=8, per_id=4, n_unknown=6, n_test=4, boxes=True, folds=2, drawn=True, size=(48, 96),
                 box_margins=(4, 4, 4, 4), image_digits=4, label_format="w_{:04d}")


# ------------------------------------------------------ competitions without image files (labels only)
@dataclass
class FakeCompetition:
    root: Path
    train: pd.DataFrame  # image, label
    test: pd.DataFrame  # image, label (the truth)
    folds: pd.DataFrame  # image, label, fold
    hashes: dict  # image -> int
    known: list  # known labels, sorted
    leaked: dict  # test or val image -> the train image it duplicates

    def val(self, fold: int = 0) -> pd.DataFrame:
        return split(self.folds, fold)[1][["image", "label"]]

    def truth(self, split_name: str, fold: int = 0) -> pd.DataFrame:
        return self.val(fold) if split_name == "val" else self.test


def _write_label_files(root: Path, train: pd.DataFrame, test: pd.DataFrame, folds: pd.DataFrame) -> None:
    """train.csv, sample_submission.csv, test_truth.csv and folds.csv in Kaggle's column names."""
    train.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Image": test["image"], "Id": UNKNOWN}).to_csv(root / "sample_submission.csv", index=False)
    test.rename(columns={"image": "Image", "label": "Id"}).to_csv(root / "test_truth.csv", index=False)
    write_folds(root / "folds.csv", folds)


def _write_hashes(root: Path, hashes: dict) -> None:
    pd.DataFrame({"Image": list(hashes), "phash": [f"{h:016x}" for h in hashes.values()]}).to_csv(root / "hashes.csv", index=False)


def _flip(h: int, bits, rng) -> int:
    for b in rng.choice(64, size=bits, replace=False):
        h ^= 1 << int(b)
    return h


def make_label_competition(root: Path, n_ids: int = 40, n_test: int = 60, seed: int = 0, unknown_share: float = 0.3,
                           n_leaks: int = 6, hashes: bool = True) -> FakeCompetition:
    """1..4 images per identity, 40% as many unknown ones, two folds (make_folds); `n_leaks` test
    images copy a train image of their identity (0..1 bits off) and as many fold-0 images another."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    known = [f"w_{i:04d}" for i in range(n_ids)]
    rows = []
    k = 0
    for lab in known:
        for _ in range(int(rng.integers(1, 5))):
            rows.append((f"tr{k:05d}.jpg", lab))
            k += 1
    for _ in range(int(len(rows) * 0.4)):
        rows.append((f"tr{k:05d}.jpg", UNKNOWN))
        k += 1
    train = pd.DataFrame(rows, columns=["image", "label"])
    test_labels = [UNKNOWN if rng.random() < unknown_share else known[int(rng.integers(n_ids))] for _ in range(n_test)]
    test = pd.DataFrame({"image": [f"te{i:05d}.jpg" for i in range(n_test)], "label": test_labels})
    folds = make_folds(train, UNKNOWN, n_folds=2, seed=seed)
    _write_label_files(root, train, test, folds)

    table = {name: int(rng.integers(0, 2**63)) * 2 + int(rng.integers(2)) for name in list(train["image"]) + list(test["image"])}
    leaked = {}
    by_label = train.groupby("label")["image"].apply(list).to_dict()
    val0 = set(folds["image"][folds["fold"] == 0])
    for i in rng.permutation(n_test)[:n_leaks]:
        name, lab = test["image"].iloc[i], test["label"].iloc[i]
        src = by_label[lab][int(rng.integers(len(by_label[lab])))]
        table[name] = _flip(table[src], int(rng.integers(0, 2)), rng)
        leaked[name] = src
    for name in sorted(val0)[:n_leaks]:
        lab = train["label"][train["image"] == name].iloc[0]
        others = [im for im in by_label[lab] if im != name and im not in val0]
        if others:
            table[name] = table[others[0]]
            leaked[name] = others[0]
    if hashes:
        _write_hashes(root, table)
    return FakeCompetition(root, train, test, folds, table, known, leaked)


def make_tuning_competition(root: Path, n_ids: int = 50, per_id: tuple[int, int] = (4, 12), unknown_share: float = 0.3,
                            n_test: int = 60, n_leaks: int = 20, seed: int = 0) -> FakeCompetition:
    """The tuner's: several images per identity, so that fold 0 (half of each identity's images, one
    always kept in train, and half of the unknown ones: about 200) is all findable; `n_leaks` of its
    images duplicate (one bit off) a train image of their identity, so the leak step matters."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    known = [f"w_{i:04d}" for i in range(n_ids)]
    labels = [lab for lab in known for _ in range(int(rng.integers(*per_id)))]
    labels += [UNKNOWN] * int(len(labels) * unknown_share / (1 - unknown_share))
    train = pd.DataFrame({"image": [f"tr{i:05d}.jpg" for i in range(len(labels))], "label": labels})
    fold = np.where(rng.random(len(train)) < 0.5, 0, -1)
    for lab, rows in train.groupby("label").indices.items():
        if lab != UNKNOWN:
            fold[rows[0]] = -1
    folds = pd.DataFrame({"image": train["image"], "label": train["label"], "fold": fold})
    test_labels = [UNKNOWN if rng.random() < unknown_share else known[int(rng.integers(n_ids))] for _ in range(n_test)]
    test = pd.DataFrame({"image": [f"te{i:05d}.jpg" for i in range(n_test)], "label": test_labels})
    _write_label_files(root, train, test, folds)

    names = list(train["image"]) + list(test["image"])
    hashes = dict(zip(names, (int(h) for h in rng.integers(0, 2**63, len(names), dtype=np.int64))))
    leaked = {}
    by_label = train[fold == -1].groupby("label")["image"].apply(list).to_dict()
    val_known = train[(fold == 0) & (train["label"] != UNKNOWN)]
    for i in rng.permutation(len(val_known))[:n_leaks]:
        name, lab = val_known["image"].iloc[i], val_known["label"].iloc[i]
        leaked[name] = by_label[lab][0]
        hashes[name] = hashes[leaked[name]] ^ (1 << int(rng.integers(64)))
    _write_hashes(root, hashes)
    return FakeCompetition(root, train, test, folds, hashes, known, leaked)


# ----------------------------------------------------------------- members' prediction sets
def noisy_scores(truth: list[str], classes: list[str], signal: float, rng, noise: float = 1.0) -> np.ndarray:
    """(N, C) float32: `signal` at each image's true class (none for the unknown) plus N(0, noise)."""
    col = {c: j for j, c in enumerate(classes)}
    s = rng.normal(0.0, noise, (len(truth), len(classes))).astype(np.float32)
    for i, lab in enumerate(truth):
        if lab in col:
            s[i, col[lab]] += signal
    return s


def write_predictions(model_dir: Path, comp: FakeCompetition, view: str = "logit", signal: float = 3.0, seed: int = 0,
                      activation: str = "softmax", splits=("val", "test"), fold: int = 0, noise: float = 1.0) -> Path:
    """A member's models/<name>/preds/<view>/<split>/ from noisy copies of the truth (`signal` high: a
    good model), rows and columns shuffled so that alignment by name, never by position, is exercised."""
    rng = np.random.default_rng(seed)
    classes = [comp.known[j] for j in rng.permutation(len(comp.known))]
    for sp in splits:
        t = comp.truth(sp, fold)
        order = rng.permutation(len(t))
        images = t["image"].iloc[order].tolist()
        labels = t["label"].iloc[order].tolist()
        s = noisy_scores(labels, classes, signal, rng, noise)
        if view == "cosine":
            s = np.tanh(s / 4).astype(np.float32)
        meta = {"kind": view, "model": model_dir.name, "split": sp, "fold": fold}
        if view == "logit":
            meta["activation"] = activation
        PredictionSet(s, images, classes, meta).save(model_dir / "preds" / view / sp)
    return model_dir


def write_blend_recipe(path: Path, data: Path, members: list[dict], **extra) -> Path:
    """blends/<name>.yaml over `members` with every step on; `extra` replaces top-level keys."""
    recipe = {"name": "final", "data": str(data), "fold": 0, "members": members,
              "steps": {"leak": {"max_distance": 1}, "new_whale": {"threshold": 0.5}, "balance": {"margin": 0.3, "min_count": 2}},
              "pseudo": {"threshold": 0.5}, "output": str(path.parent / "submissions")}
    recipe.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, dump_yaml(recipe))
    return path


# ----------------------------------------------------------------------------- trained members
TINY_BACKBONE = {"backbone": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_tiny_recipe(data: Path | str, **over):
    """A training recipe that trains in seconds: resnet18 at 1/8 of its width, 32x64 input, no
    augmentation; `over`'s nested dicts merge into these defaults."""
    base = {
        "name": "tiny", "data": str(data), "fold": 0, "seed": 0,
        "model": dict(TINY_BACKBONE),
        "head": {"type": "softmax", "embedding_dim": 16, "dropout": 0.0},
        "input": {"size": [32, 64]},
        "augment": {"probability": 0.0, "blur": 0.0, "motion_blur": 0.0, "greyscale": 0.0, "add": 0.0,
                    "multiply": [1.0, 1.0]},
        "sampling": {"batch_size": 8},
        "stages": [{"epochs": 2, "lr": 0.003}],
        "runtime": {"val_batch_size": 16},
    }
    return recipe_from_dict(deep_merge(base, over), source="tiny recipe")


MEMBER_INPUT = [32, 64]  # (H, W): small enough for 2 cores, large enough for resnet18's 32x downsampling


def make_member(out: Path, data: Path, *, head: str = "softmax", flip: str = "twin", fold: int = 0,
                seed: int = 0, drop_classes: int = 0, name: str | None = None) -> Path:
    """A member directory as the training loop leaves it (recipe.yaml, classes.txt, checkpoint.pt),
    untrained resnet18 weights with BatchNorm statistics that are not the identity (so that BN
    folding is exercised); `drop_classes` leaves the first identities of the fold untrained."""
    import torch

    from kit.train.checkpoint import save_checkpoint, write_member_files
    from kit.train.model import build_model, member_info, resolve_norm

    recipe = recipe_from_dict({"name": name or out.name, "data": str(data), "fold": fold, "seed": seed,
                               "model": {"backbone": "resnet18", "pretrained": False},
                               "head": {"type": head, "embedding_dim": 32, "dropout": 0.0},
                               "input": {"size": MEMBER_INPUT}, "augment": {"flip": flip}})
    comp = load_competition(data)
    train_rows, _ = split(read_folds(data / "folds.csv", comp.train), fold)
    classes = sorted(set(train_rows["label"]) - {comp.unknown})[drop_classes:]
    torch.manual_seed(seed)
    model = build_model(recipe, len(classes), pretrained=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    mean, std = resolve_norm(recipe, model.backbone)
    info = member_info(recipe, classes, mean, std, use_boxes=comp.boxes is not None)
    out.mkdir(parents=True, exist_ok=True)
    write_member_files(out, recipe, classes)
    save_checkpoint(out / "checkpoint.pt", model, recipe, classes, info, epoch=1, stage=1)
    return out


def make_oof_member(out: Path, data: Path, *, flip: str = "none", drop_classes: dict[int, int] | None = None) -> Path:
    """An out-of-fold member as `train_every_fold` leaves it: recipe.yaml (fold: all) and fold<k>/ per
    fold, each with its own seed (their scores differ); `drop_classes` = {fold: n} leaves n identities
    of that fold's member untrained."""
    folds = sorted(set(read_folds(data / "folds.csv")["fold"]) - {-1})
    for k in folds:
        make_member(fold_dir(out, k), data, flip=flip, fold=k, seed=k + 1,
                    drop_classes=(drop_classes or {}).get(k, 0), name=f"{out.name}.fold{k}")
    first = load_recipe(fold_dir(out, folds[0]) / "recipe.yaml", checkpoint=True)
    save_recipe(dataclasses.replace(first, name=out.name, fold=ALL_FOLDS), out / "recipe.yaml")
    return out


# ------------------------------------------------------------------ a Kaggle-scale project, for the benchmarks
N_TEST, N_IDS, N_MEMBERS, N_VAL_IDS, N_VAL_UNKNOWN = 7960, 5004, 3, 512, 230


def _train_labels(rng, real: Path | None) -> tuple[list[str], list[str], str]:
    """(images, labels, source): the real 2019 label file's (`real`, its train.csv) if it is there,
    else labels of its statistics."""
    if real is not None and real.is_file():
        frame = pd.read_csv(real, dtype=str)
        return frame["Image"].tolist(), frame["Id"].tolist(), f"labels of {real} (read, not copied)"
    # 5,004 ids: 2,073 with one image, 1,285 with two, the rest 3..73 (heavy-tailed); 9,664 new_whale
    counts = [1] * 2073 + [2] * 1285
    rest = N_IDS - len(counts)
    spare = 25361 - 9664 - sum(counts) - 3 * rest
    tail = 3 + rng.multinomial(spare, _normalised(rng.pareto(1.2, rest) + 0.05))
    while tail.max() > 73:  # move the overflow of the largest ids onto random others
        over = int((tail - 73).clip(0).sum())
        tail = tail.clip(max=73)
        tail += rng.multinomial(over, _normalised((tail < 73).astype(float)))
    counts += tail.tolist()
    labels = [f"w_{i:07x}" for i, c in enumerate(counts) for _ in range(c)] + ["new_whale"] * 9664
    return [f"{i:09x}.jpg" for i in range(len(labels))], labels, "synthetic labels of the 2019 shape (real train.csv absent)"


def _normalised(w):
    return w / w.sum()


def kaggle_scale_project(root: Path, rng, folds: int = 1, real_labels: Path | None = None) -> dict:
    """A Kaggle-scale competition (no image files), three members' val and test sets, hashes.csv; with
    folds > 1, that many disjoint validation folds and out-of-fold members (their `oof` sets). Its
    labels: the real 2019 train.csv at `real_labels` when given and there (read, never copied),
    else drawn to its statistics. For the benchmarks (kit/bench/post.py, tune.py)."""
    train_images, train_labels, source = _train_labels(rng, real_labels)
    known = sorted(set(train_labels) - {"new_whale"})
    data = root / "data"
    data.mkdir(parents=True)
    pd.DataFrame({"Image": train_images, "Id": train_labels}).to_csv(data / "train.csv", index=False)
    test_images = [f"t{i:08x}.jpg" for i in range(N_TEST)]
    test_truth = np.where(rng.random(N_TEST) < 0.276, "new_whale", np.array(known, dtype=object)[rng.integers(0, len(known), N_TEST)])
    pd.DataFrame({"Image": test_images, "Id": "new_whale"}).to_csv(data / "sample_submission.csv", index=False)
    pd.DataFrame({"Image": test_images, "Id": test_truth}).to_csv(data / "test_truth.csv", index=False)
    # folds like the winners' validation: one image of 512 ids with >= 2 images, 230 new_whale images
    labels = np.array(train_labels, dtype=object)
    fold = np.full(len(labels), -1)
    multi = [k for k, c in pd.Series(train_labels).value_counts().items() if c >= 2 and k != "new_whale"]
    first = {}
    for i, lab in enumerate(train_labels):
        first.setdefault(lab, i)
    ids = rng.permutation(multi)
    unknown = rng.permutation(np.flatnonzero(labels == "new_whale"))
    for f in range(folds):
        for lab in ids[f * N_VAL_IDS:(f + 1) * N_VAL_IDS]:
            fold[first[lab]] = f
        fold[unknown[f * N_VAL_UNKNOWN:(f + 1) * N_VAL_UNKNOWN]] = f
    pd.DataFrame({"Image": train_images, "Id": train_labels, "fold": fold}).to_csv(data / "folds.csv", index=False)
    # hashes: random, ~135 test images duplicating a train image of their identity (as in 2019)
    hashes = dict(zip(train_images + test_images, rng.integers(0, 2**63, len(train_images) + N_TEST, dtype=np.int64).tolist()))
    by_label = pd.Series(train_images).groupby(labels).apply(list).to_dict()
    dups = rng.choice(N_TEST, 135, replace=False)
    for i in dups:
        hashes[test_images[i]] = hashes[by_label[test_truth[i]][0]] ^ (1 if i % 2 else 0)
    val_rows = np.flatnonzero(fold >= 0)
    for i in rng.choice(val_rows, 60, replace=False):  # and some val images duplicate a train image of theirs
        others = [n for n in by_label[labels[i]] if n != train_images[i] and fold[train_images.index(n)] != fold[i]] \
            if labels[i] != "new_whale" else []
        if others:
            hashes[train_images[i]] = hashes[others[0]]
    pd.DataFrame({"Image": list(hashes), "phash": [f"{h:016x}" for h in hashes.values()]}).to_csv(data / "hashes.csv", index=False)
    # members: noisy copies of the truth, logits
    col = {c: j for j, c in enumerate(known)}
    val_images = [im for im, f in zip(train_images, fold) if f >= 0]
    val_truth = [lab for lab, f in zip(train_labels, fold) if f >= 0]
    val_split = "oof" if folds > 1 else "val"
    members = []
    for m in range(N_MEMBERS):
        for split, images, truth in (("test", test_images, test_truth), (val_split, val_images, val_truth)):
            s = rng.standard_normal((len(images), len(known)), dtype=np.float32) * 1.5
            rows = np.array([i for i, t in enumerate(truth) if t in col])
            s[rows, [col[truth[i]] for i in rows]] += 4.5 + 0.5 * m
            PredictionSet(s, list(images), known, {"kind": "logit", "activation": "softmax", "model": f"m{m}",
                                                    "split": split, "fold": 0}).save(root / "models" / f"m{m}" / "preds" / "logit" / split)
        members.append(root / "models" / f"m{m}")
    return {"data": data, "members": members, "source": source, "train_images": train_images, "folds": folds,
            "train_labels": train_labels, "test_images": test_images, "known": known, "hashes": hashes}
