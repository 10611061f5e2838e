"""Reading a competition directory: the Kaggle 2019 / 2018 humpback layout and Happywhale 2022.

The layout is detected from the files. Inside the kit every label file becomes a frame with
columns `image` and `label`; the unknown identity's name (`new_whale`, `new_individual`) is
data from the layout table below, or the caller's `unknown=` override.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kit.errors import KitError
from kit.io import read_csv, settle


@dataclass(frozen=True)
class Layout:
    name: str
    train_columns: tuple[str, str]  # (image, label) in train.csv
    submission_columns: tuple[str, str]  # (image, predictions) in sample_submission.csv
    train_dir: str
    test_dir: str
    unknown: str


LAYOUTS = (
    # Kaggle 2019 humpback-whale-identification and the 2018 playground: same files and columns.
    Layout("humpback", ("Image", "Id"), ("Image", "Id"), "train", "test", "new_whale"),
    Layout("happywhale", ("image", "individual_id"), ("image", "predictions"), "train_images", "test_images", "new_individual"),
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Competition:
    root: Path
    layout: Layout
    train: pd.DataFrame  # image, label (+ species for Happywhale)
    test_images: list[str]
    unknown: str
    boxes: pd.DataFrame | None = None  # index image; columns x0, y0, x1, y1 (int)
    truth: pd.DataFrame | None = None  # image, label: test_truth.csv of a synthetic competition

    @property
    def train_dir(self) -> Path:
        return self.root / self.layout.train_dir

    @property
    def test_dir(self) -> Path:
        return self.root / self.layout.test_dir

    def image_path(self, image: str, split: str = "train") -> Path:
        return (self.train_dir if split == "train" else self.test_dir) / image

    @property
    def known_labels(self) -> list[str]:
        """Identities that can be predicted: every train label but the unknown one, sorted."""
        return sorted(set(self.train["label"]) - {self.unknown})

    def digest(self) -> str:
        """What identifies this competition wherever it lies: a SHA-256 over its train images and labels,
        its test images and its validation folds (folds.csv), each sorted. A copied or moved project
        keeps it; another competition regenerated at the same path does not. Never the test truth."""
        h = hashlib.sha256()
        for line in sorted(f"{i},{l}" for i, l in zip(self.train["image"], self.train["label"])):
            h.update(f"{line}\n".encode())
        h.update(b"-- test\n")
        for image in sorted(self.test_images):
            h.update(f"{image}\n".encode())
        folds = self.root / "folds.csv"
        if folds.is_file():
            h.update(b"-- folds\n")
            for line in sorted(folds.read_text(encoding="utf-8", errors="replace").splitlines()[1:]):
                h.update(f"{line.strip()}\n".encode())
        return h.hexdigest()[:16]

    def submission_frame(self, images: list[str], labels: list[list[str]]) -> pd.DataFrame:
        """A submission in this competition's own column names, labels space-separated."""
        image_col, pred_col = self.layout.submission_columns
        return pd.DataFrame({image_col: images, pred_col: [" ".join(l) for l in labels]})


def detect_layout(root: Path) -> Layout:
    train_csv = root / "train.csv"
    if not root.is_dir():
        raise KitError(f"{root}: competition directory not found")
    if not train_csv.is_file():
        raise KitError(f"{root}: no train.csv; expected a Kaggle competition directory (train.csv, train/, test/, sample_submission.csv)")
    header = train_csv.open(encoding="utf-8", errors="replace").readline().strip().split(",")
    for layout in LAYOUTS:
        if set(layout.train_columns) <= set(header):
            return layout
    wanted = " or ".join(",".join(l.train_columns) for l in LAYOUTS)
    raise KitError(f"{train_csv}: header {','.join(header) or '(empty)'} matches no known layout; expected columns {wanted}")


def _no_duplicates(frame: pd.DataFrame, column: str, path: Path) -> None:
    dup = frame[column][frame[column].duplicated()]
    if len(dup):
        raise KitError(f"{path}: image {dup.iloc[0]!r} is listed {int((frame[column] == dup.iloc[0]).sum())} times ({len(dup)} duplicate rows)")


def _plain_names(names: pd.Series, column: str, path: Path) -> None:
    """Image names are file names inside the competition's image directories, nothing else: a name
    with a directory part or '..' would let a label file point the kit (and the report, which
    embeds images) at any file on the machine."""
    bad = names[~names.map(lambda n: bool(n) and n not in (".", "..") and not any(c in n for c in "/\\\0"))]
    if len(bad):
        raise KitError(f"{path}: {column} {bad.iloc[0]!r} is not a plain file name (no directories, no '..'); "
                       f"{len(bad)} such row(s)")


def _plain_labels(labels: pd.Series, column: str, path: Path) -> None:
    """Identities are single words: a submission separates its five labels with spaces."""
    bad = labels[labels.str.contains(r"\s", regex=True)]
    if len(bad):
        raise KitError(f"{path}: row {int(bad.index[0]) + 2}: {column} {bad.iloc[0]!r} contains whitespace, which a "
                       f"submission cannot carry (its labels are space-separated); {len(bad)} such row(s)")


def _all_present(images: pd.Series, directory: Path, listing: Path) -> None:
    if not directory.is_dir():
        raise KitError(f"{directory}: image directory not found (images listed in {listing})")
    on_disk = set(os.listdir(directory))
    missing = [n for n in images if n not in on_disk]
    if missing:
        raise KitError(f"{listing}: {len(missing)} listed image(s) absent from {directory}/, e.g. {missing[0]!r}")


def _read_boxes(path: Path) -> pd.DataFrame:
    frame = read_csv(path, ("Image", "x0", "y0", "x1", "y1"), "bounding boxes")
    _no_duplicates(frame, "Image", path)
    _plain_names(frame["Image"], "Image", path)
    try:
        boxes = frame.set_index("Image")[["x0", "y0", "x1", "y1"]].astype(int)
    except ValueError:
        raise KitError(f"{path}: box coordinates must be integers") from None
    bad = boxes[(boxes.x1 <= boxes.x0) | (boxes.y1 <= boxes.y0)]
    if len(bad):
        raise KitError(f"{path}: empty box for image {bad.index[0]!r} (x1 <= x0 or y1 <= y0)")
    boxes.index.name = "image"
    return boxes


def load_competition(root: str | os.PathLike, unknown: str | None = None, check_images: bool = True) -> Competition:
    """Read and check a competition directory; every problem is a KitError naming the file."""
    root = Path(root)
    if root.is_dir():
        settle(root)  # prepare.py's folds.csv and hashes.csv: one run's, whole
    layout = detect_layout(root)
    unknown = unknown or layout.unknown

    train_csv = root / "train.csv"
    image_col, label_col = layout.train_columns
    raw = read_csv(train_csv, layout.train_columns, "train labels")
    _no_duplicates(raw, image_col, train_csv)
    empty = raw[(raw[image_col] == "") | (raw[label_col] == "")]
    if len(empty):
        raise KitError(f"{train_csv}: row {int(empty.index[0]) + 2} has an empty {image_col} or {label_col}")
    _plain_names(raw[image_col], image_col, train_csv)
    _plain_labels(raw[label_col], label_col, train_csv)
    train = pd.DataFrame({"image": raw[image_col], "label": raw[label_col]})
    if "species" in raw.columns:
        train["species"] = raw["species"]

    sub_csv = root / "sample_submission.csv"
    sub = read_csv(sub_csv, layout.submission_columns[:1], "sample submission (the test list)")
    _no_duplicates(sub, layout.submission_columns[0], sub_csv)
    _plain_names(sub[layout.submission_columns[0]], layout.submission_columns[0], sub_csv)
    test_images = sub[layout.submission_columns[0]].tolist()
    overlap = set(test_images) & set(train["image"])
    if overlap:
        raise KitError(f"{sub_csv}: test image {sorted(overlap)[0]!r} is also listed in {train_csv}")

    if check_images:
        _all_present(train["image"], root / layout.train_dir, train_csv)
        _all_present(sub[layout.submission_columns[0]], root / layout.test_dir, sub_csv)

    boxes = _read_boxes(root / "bounding_boxes.csv") if (root / "bounding_boxes.csv").is_file() else None

    truth = None
    truth_csv = root / "test_truth.csv"
    if truth_csv.is_file():
        t = read_csv(truth_csv, layout.train_columns, "test truth")
        truth = pd.DataFrame({"image": t[image_col], "label": t[label_col]})

    return Competition(root, layout, train, test_images, unknown, boxes, truth)
