"""Reading a competition directory: the Kaggle 2019 / 2018 humpback layout, Happywhale 2022 and
AnimalCLEF 2025.

The layout is detected from the files: train.csv's header, or AnimalCLEF's metadata.csv. Inside the
kit every label file becomes a frame with columns `image` and `label`; the unknown identity's name
(`new_whale`, `new_individual`) is data from the layout table below, or the caller's `unknown=`
override. The flat layouts keep an image's file in `train_dir` or `test_dir` under its name;
AnimalCLEF's metadata.csv gives each image (an integer `image_id`) its own path, in sub-folders
(`Competition.paths`). Whatever reads an image's file asks `Competition.image_path`.
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
    labels_per_row: int = 5  # the labels a submission row carries (the metric scores that many)
    metric: str = "map5"  # the competition's own metric (kit/metrics/)
    listing: str = "train.csv"  # the file that lists the train images and tells the layout


LAYOUTS = (
    # Kaggle 2019 humpback-whale-identification and the 2018 playground: same files and columns.
    Layout("humpback", ("Image", "Id"), ("Image", "Id"), "train", "test", "new_whale"),
    Layout("happywhale", ("image", "individual_id"), ("image", "predictions"), "train_images", "test_images", "new_individual"),
    # AnimalCLEF 2025: metadata.csv lists the gallery (split database) and the queries, each image at its own path
    Layout("animalclef", ("image_id", "identity"), ("image_id", "identity"), "images", "images", "new_individual",
           labels_per_row=1, metric="animalclef", listing="metadata.csv"),
)
METADATA_COLUMNS = ("image_id", "identity", "path", "split", "dataset")  # AnimalCLEF's, required
METADATA_OPTIONAL = ("species", "date", "orientation")  # kept in `train` when present
TRUTH_COLUMNS = ("image_id", "identity", "new_identity")  # AnimalCLEF's solution (+ dataset)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class Competition:
    root: Path
    layout: Layout
    train: pd.DataFrame  # image, label (+ species for Happywhale)
    test_images: list[str]
    unknown: str
    boxes: pd.DataFrame | None = None  # index image; columns x0, y0, x1, y1 (int)
    # image, label: test_truth.csv of a synthetic competition; AnimalCLEF's adds `individual`, the
    # identity as the solution gives it (a new individual's own name), its label being the unknown one
    truth: pd.DataFrame | None = None
    paths: dict[str, str] | None = None  # image -> its file relative to root ('/'-separated); None: flat layouts
    datasets: dict[str, str] | None = None  # image -> its dataset, train and test (AnimalCLEF); None: flat layouts

    @property
    def train_dir(self) -> Path:
        return self.root / self.layout.train_dir

    @property
    def test_dir(self) -> Path:
        return self.root / self.layout.test_dir

    def relative_path(self, image: str, split: str = "train") -> str:
        """The image's file relative to the root, '/'-separated: also its key in the crop and feature
        caches (`train/<name>` in the 2019 layout, the metadata's path in AnimalCLEF's)."""
        if self.paths is not None:
            return self.paths[image]
        return f"{self.layout.train_dir if split == 'train' else self.layout.test_dir}/{image}"

    def image_path(self, image: str, split: str = "train") -> Path:
        """The image's file. `split` ("train" or "test") picks the directory of a flat layout;
        AnimalCLEF's images are found by name alone."""
        return self.root / self.relative_path(image, split)

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
        """A submission in this competition's own column names: each row's first `labels_per_row`
        labels (five, or AnimalCLEF's one), space-separated."""
        image_col, pred_col = self.layout.submission_columns
        k = self.layout.labels_per_row
        return pd.DataFrame({image_col: images, pred_col: [" ".join(list(l)[:k]) for l in labels]})


def detect_layout(root: Path) -> Layout:
    train_csv = root / "train.csv"
    if not root.is_dir():
        raise KitError(f"{root}: competition directory not found")
    if not train_csv.is_file():
        if (root / "metadata.csv").is_file():
            return next(l for l in LAYOUTS if l.listing == "metadata.csv")
        raise KitError(f"{root}: no train.csv; expected a Kaggle competition directory (train.csv, train/, test/, "
                       f"sample_submission.csv) or AnimalCLEF's (metadata.csv, images/)")
    header = train_csv.open(encoding="utf-8", errors="replace").readline().strip().split(",")
    flat = [l for l in LAYOUTS if l.listing == "train.csv"]
    for layout in flat:
        if set(layout.train_columns) <= set(header):
            return layout
    wanted = " or ".join(",".join(l.train_columns) for l in flat)
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
    if layout.listing == "metadata.csv":
        return load_metadata(root, layout, unknown, check_images)

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


# ---- AnimalCLEF 2025: metadata.csv ------------------------------------------------------------

def _safe_paths(paths: pd.Series, path: Path) -> None:
    """A metadata path stays inside the competition: relative, '/'-separated, no '..' (a label file
    must not point the kit, or the report that embeds images, at any file on the machine)."""
    def bad(p: str) -> bool:
        parts = p.split("/")
        return (not p or p.startswith("/") or "\\" in p or "\0" in p or ":" in parts[0]
                or any(part in ("", ".", "..") for part in parts))
    wrong = paths[paths.map(bad)]
    if len(wrong):
        raise KitError(f"{path}: row {int(wrong.index[0]) + 2}: path {wrong.iloc[0]!r} is not a relative path inside "
                       f"the competition directory (absolute, empty, with '..' or a backslash); {len(wrong)} such row(s)")


def _files_present(relative: pd.Series, root: Path, listing: Path) -> None:
    """Every listed file on disk: one directory listing per folder, not a stat per image."""
    missing = []
    for folder, names in relative.groupby(relative.map(lambda p: p.rpartition("/")[0]), sort=True):
        directory = root / folder
        on_disk = set(os.listdir(directory)) if directory.is_dir() else set()
        missing += [p for p in names if p.rpartition("/")[2] not in on_disk]
    if missing:
        raise KitError(f"{listing}: {len(missing)} listed image(s) absent from {root}/, e.g. {sorted(missing)[0]!r}")


def _read_metadata(path: Path) -> pd.DataFrame:
    """metadata.csv as published, checked: one KitError naming the file and the first bad row."""
    frame = read_csv(path, METADATA_COLUMNS, "AnimalCLEF metadata")
    row = lambda mask: int(frame.index[mask.to_numpy()][0]) + 2  # noqa: E731  (the file's line: 1 is the header)
    splits = ~frame["split"].isin(("database", "query"))
    if splits.any():
        raise KitError(f"{path}: row {row(splits)}: split {frame['split'][splits].iloc[0]!r} is neither database (the "
                       f"gallery) nor query (the test images); {int(splits.sum())} such row(s)")
    for column in ("image_id", "path", "dataset"):
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise KitError(f"{path}: row {row(empty)} has an empty {column}")
    spaced = frame["image_id"].str.contains(r"\s", regex=True)
    if spaced.any():
        raise KitError(f"{path}: row {row(spaced)}: image_id {frame['image_id'][spaced].iloc[0]!r} contains whitespace")
    _no_duplicates(frame, "image_id", path)
    database = frame["split"] == "database"
    nameless = database & (frame["identity"].str.strip() == "")
    if nameless.any():
        raise KitError(f"{path}: row {row(nameless)}: database image {frame['image_id'][nameless].iloc[0]!r} has no "
                       f"identity (the gallery's identities are known); {int(nameless.sum())} such row(s)")
    _plain_labels(frame["identity"][database], "identity", path)
    _safe_paths(frame["path"], path)
    twice = frame["path"][frame["path"].duplicated()]
    if len(twice):
        raise KitError(f"{path}: path {twice.iloc[0]!r} is listed for {int((frame['path'] == twice.iloc[0]).sum())} images")
    for split, what in (("database", "the gallery"), ("query", "the test images")):
        if not (frame["split"] == split).any():
            raise KitError(f"{path}: no {split} rows ({what})")
    return frame


def new_identity(column: pd.Series, path: Path) -> pd.Series:
    """The solution's `new_identity` column as booleans (True/False, 1/0); anything else is one
    KitError naming the file and the row."""
    flag = column.astype(str).str.strip().str.lower()
    odd = ~flag.isin(("true", "false", "1", "0"))
    if odd.any():
        row = int(column.index[odd.to_numpy()][0]) + 2
        raise KitError(f"{path}: row {row}: new_identity {column[odd].iloc[0]!r} is not True or False")
    return flag.isin(("true", "1"))


def _read_solution(path: Path, unknown: str) -> pd.DataFrame:
    """AnimalCLEF's solution (image_id, identity, new_identity, dataset) → image, label (the unknown
    label for a new individual), individual (the identity as given)."""
    t = read_csv(path, TRUTH_COLUMNS, "test truth")
    is_new = new_identity(t["new_identity"], path)
    return pd.DataFrame({"image": t["image_id"], "label": t["identity"].where(~is_new, unknown),
                         "individual": t["identity"]})


def load_metadata(root: Path, layout: Layout, unknown: str, check_images: bool = True) -> Competition:
    """AnimalCLEF's directory: metadata.csv (the gallery: split database; the test: split query),
    images at their paths, sample_submission.csv optional (its images must be the queries),
    test_truth.csv (a synthetic competition's solution) optional."""
    listing = root / layout.listing
    meta = _read_metadata(listing)
    database, query = meta[meta["split"] == "database"], meta[meta["split"] == "query"]
    train = pd.DataFrame({"image": database["image_id"], "label": database["identity"]})
    for column in ("dataset", *METADATA_OPTIONAL):
        if column in meta.columns:
            train[column] = database[column]
    train = train.reset_index(drop=True)
    test_images = query["image_id"].tolist()

    sub_csv = root / "sample_submission.csv"
    if sub_csv.is_file():  # Kaggle's order for the submission's rows; the same images as the queries
        image_col = layout.submission_columns[0]
        sub = read_csv(sub_csv, (image_col,), "sample submission (the test list)")
        _no_duplicates(sub, image_col, sub_csv)
        stray = sorted(set(sub[image_col]) - set(test_images))
        if stray:
            raise KitError(f"{sub_csv}: {len(stray)} image(s) not among the query rows of {listing}, e.g. {stray[0]!r}")
        absent = sorted(set(test_images) - set(sub[image_col]))
        if absent:
            raise KitError(f"{sub_csv}: {len(absent)} query image(s) of {listing} missing, e.g. {absent[0]!r}")
        test_images = sub[image_col].tolist()

    if check_images:
        _files_present(meta["path"], root, listing)
    boxes = _read_boxes(root / "bounding_boxes.csv") if (root / "bounding_boxes.csv").is_file() else None
    truth_csv = root / "test_truth.csv"
    truth = _read_solution(truth_csv, unknown) if truth_csv.is_file() else None
    paths = dict(zip(meta["image_id"], meta["path"]))
    datasets = dict(zip(meta["image_id"], meta["dataset"]))
    return Competition(root, layout, train, test_images, unknown, boxes, truth, paths, datasets)
