"""The synthetic competition in AnimalCLEF 2025's layout (`layout="animalclef"`): lynxes,
salamanders and sea turtles of WildlifeReID-10k, one dataset each, in one competition.

The same draw as the 2019 layout of the seed (kit/data/synthetic.py's `plan`: the same animals,
photos, planted duplicates and conflicting labels, so the same difficulty), with AnimalCLEF's shape
on top, from a stream of its own:
- the database (the gallery) is the 2019 train set's labelled photos: AnimalCLEF names the identity
  of every database image, and its individuals have several images each, so the 2019 new_whale
  photos (and copies of them) are left out, not made into a gallery of singletons;
- the queries are the 2019 test images; the photos of never-seen animals are grouped into new
  individuals of one to five images each, so that BAUS, which averages over unknown individuals,
  weighs them as the real score does;
- each animal belongs to one dataset (`DATASETS`), drawn by its species' share of the gallery's
  animals, a new individual by that share times the species' `unknown` factor (the datasets differ
  in how often a query is new); its images are drawn with the species' look;
- files: `images/<dataset>/<database|query>/<name>.jpg`, `metadata.csv` in the published columns
  (integer image ids, a plausible date and orientation), `sample_submission.csv` (every query
  `new_individual`), `test_truth.csv` in the organisers' solution columns, `synthetic.json`, and
  `bounding_boxes.csv` by image_id: AnimalCLEF publishes none, but its photos are framed on the
  animal and ours are not, so a detector's boxes stand in for that framing (`write_labels`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kit.data.synthetic_plan import UNKNOWN, VERSION, Plan, _hex_names, _write_csv
from kit.data.synthetic_photos import _DATASETS, CLEF_SPECIES

CLEF_UNKNOWN = "new_individual"
DATASETS = {"LynxID2025": "lynx", "SalamanderID2025": "salamander", "SeaTurtleID2022": "loggerhead turtle"}
NEW_IMAGES = (1, 2, 3, 4, 5)  # images of one new individual among the queries, drawn with NEW_SHARE
NEW_SHARE = (0.35, 0.3, 0.2, 0.1, 0.05)
ORIENTATIONS = {"lynx": ("left", "right"), "salamander": ("top",), "loggerhead turtle": ("left", "right", "top")}
YEARS = {"LynxID2025": (2005, 2022), "SalamanderID2025": (2011, 2024), "SeaTurtleID2022": (2010, 2021)}
METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]


@dataclass(frozen=True)
class ClefPlan(Plan):
    """A Plan in AnimalCLEF's layout. `label` is the kit's truth (the identity, or `new_individual`
    for a query of an animal absent from the database); `species` the look each image is drawn with."""

    dataset: np.ndarray | None = None  # (n,) str: the dataset an image is filed under (its identity's)
    identity: np.ndarray | None = None  # (n,) str: the identity written, a new individual's own name included
    new: np.ndarray | None = None  # (n,) bool: a query of an animal absent from the database
    image_id: np.ndarray | None = None  # (n,) int
    date: np.ndarray | None = None  # (n,) str, YYYY-MM-DD
    orientation: np.ndarray | None = None  # (n,) str

    def file(self, i: int) -> str:
        return f"images/{self.dataset[i]}/{'database' if i < self.n_train else 'query'}/{self.image[i]}"

    def metadata(self) -> pd.DataFrame:
        """metadata.csv: every image, by image_id; a query's identity empty."""
        n = len(self.image)
        split = np.where(np.arange(n) < self.n_train, "database", "query")
        frame = pd.DataFrame({
            "image_id": self.image_id, "identity": np.where(split == "database", self.identity, ""),
            "path": [self.file(i) for i in range(n)], "date": self.date, "orientation": self.orientation,
            "species": [DATASETS[d] for d in self.dataset], "split": split, "dataset": self.dataset})
        return frame.sort_values("image_id", ignore_index=True)[METADATA_COLUMNS]

    def frame(self, split: str) -> pd.DataFrame:
        """metadata.csv's database rows for "train"; the solution (test_truth.csv: image_id, identity,
        new_identity, dataset) for "test"; sorted by image_id."""
        if split == "train":
            meta = self.metadata()
            return meta[meta["split"] == "database"].reset_index(drop=True)
        part = slice(self.n_train, None)
        frame = pd.DataFrame({"image_id": self.image_id[part], "identity": self.identity[part],
                              "new_identity": self.new[part], "dataset": self.dataset[part]})
        return frame.sort_values("image_id", ignore_index=True)

    def test_duplicates(self) -> dict[str, str]:
        """Query image id -> the database image id it re-encodes."""
        idx = np.flatnonzero(self.source[self.n_train:] >= 0) + self.n_train
        return {str(self.image_id[i]): str(self.image_id[self.source[i]]) for i in idx}

    def train_conflicts(self) -> list[dict[str, str]]:
        """Database pictures listed twice under two identities."""
        idx = np.flatnonzero(self.source[: self.n_train] >= 0)
        return [{"image": str(self.image_id[i]), "label": str(self.identity[i]),
                 "source": str(self.image_id[self.source[i]]), "source_label": str(self.identity[self.source[i]])}
                for i in idx]

    def counts(self) -> dict[str, int]:
        database, query = slice(0, self.n_train), slice(self.n_train, None)
        _, per_id = np.unique(self.identity[database], return_counts=True)
        new = self.new[query]
        return {
            "database": int(self.n_train), "query": int(self.n_test), "identities": int(len(per_id)),
            "query_known": int((~new).sum()), "query_new": int(new.sum()),
            "new_individuals": int(len(np.unique(self.identity[query][new]))),
            "ids_with_one_image": int((per_id == 1).sum()), "ids_with_two_images": int((per_id == 2).sum()),
            "largest_id": int(per_id.max()) if len(per_id) else 0,
            "greyscale": int(self.grey.sum()), "captioned": int(self.caption.sum()),
            "test_duplicates": int((self.source[query] >= 0).sum()),
            "train_conflicts": int((self.source[database] >= 0).sum()),
        }

    def dataset_counts(self) -> dict:
        """Per dataset: database images and identities, queries, the share of them new, new individuals."""
        out = {}
        for name in DATASETS:
            db = self.dataset[: self.n_train] == name
            q = self.dataset[self.n_train:] == name
            new = self.new[self.n_train:] & q
            out[name] = {"database": int(db.sum()), "identities": int(len(np.unique(self.identity[: self.n_train][db]))),
                         "query": int(q.sum()), "query_new": round(float(new.sum() / q.sum()) if q.any() else 0.0, 3),
                         "new_individuals": int(len(np.unique(self.identity[self.n_train:][new])))}
        return out

    def write_labels(self, root: Path, boxes: dict, widths: tuple[int, int]) -> None:
        """metadata.csv, sample_submission.csv, test_truth.csv, bounding_boxes.csv (by image_id) and
        synthetic.json into `root`. AnimalCLEF publishes no boxes, but its photos are framed on the
        animal; ours are seascapes with the animal somewhere in them, so the boxes a detector would
        give stand in for that framing (bounding_boxes.csv, as a user's detector would write it)."""
        _write_csv(root / "metadata.csv", self.metadata())
        order = np.argsort(self.image_id, kind="stable")
        _write_csv(root / "bounding_boxes.csv", pd.DataFrame(
            [(str(self.image_id[i]), *boxes[int(i)]) for i in order], columns=["Image", "x0", "y0", "x1", "y1"]))
        truth = self.frame("test")
        _write_csv(root / "test_truth.csv", truth)
        _write_csv(root / "sample_submission.csv", pd.DataFrame({"image_id": truth["image_id"], "identity": CLEF_UNKNOWN}))
        meta = {
            "generator": "kit.data.synthetic", "version": VERSION, "size": self.size, "seed": int(self.seed),
            "layout": self.layout, "datasets": self.dataset_counts(), "unknown": CLEF_UNKNOWN,
            "counts": self.counts(), "image_width": list(widths),
            "test_duplicates": self.test_duplicates(), "train_conflicts": self.train_conflicts(),
        }
        (root / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n")


def _group_new(rng: np.random.Generator, p: Plan, animal: np.ndarray) -> np.ndarray:
    """The queries' never-seen animals (one photo each in the 2019 draw) grouped into new individuals
    of NEW_IMAGES photos each: a group's photos all show its first member's animal."""
    fresh = p.n_train + np.flatnonzero((p.label[p.n_train:] == UNKNOWN) & (p.source[p.n_train:] < 0))
    order = rng.permutation(fresh)
    animal = animal.copy()
    k = 0
    while k < len(order):
        size = int(rng.choice(NEW_IMAGES, p=NEW_SHARE))
        animal[order[k:k + size]] = animal[order[k]]
        k += size
    return animal


def _labelled_only(p: Plan) -> Plan:
    """The plan without its train new_whale photos, nor copies of them: AnimalCLEF's database names
    the identity of every image, and its individuals have several images each (a 2019 new_whale
    photo kept as an identity seen once would be a gallery of singletons no member can learn)."""
    drop = np.zeros(len(p.image), bool)
    drop[:p.n_train] = p.label[:p.n_train] == UNKNOWN
    while True:  # and whatever re-encodes a dropped photo, however far down the chain
        more = drop | ((p.source >= 0) & drop[np.maximum(p.source, 0)])
        if (more == drop).all():
            break
        drop = more
    keep = np.flatnonzero(~drop)
    index = np.full(len(drop), -1, np.int64)
    index[keep] = np.arange(len(keep))
    changes = {f.name: getattr(p, f.name)[keep] for f in fields(p)
               if isinstance(getattr(p, f.name), np.ndarray) and len(getattr(p, f.name)) == len(drop)}
    changes["source"] = np.where(p.source[keep] >= 0, index[np.maximum(p.source[keep], 0)], -1)
    return replace(p, **changes, n_train=int((keep < p.n_train).sum()))


def with_datasets(p: Plan, n_ids: int, n_new: int) -> ClefPlan:
    """The 2019 plan `p` (its first `n_ids` animals the known ids, the next `n_new` train new_whales)
    in AnimalCLEF's shape; see the module's docstring."""
    p = _labelled_only(p)
    rng = np.random.default_rng([p.seed, _DATASETS])
    n, n_train = len(p.image), p.n_train
    names = list(DATASETS)
    share = np.array([CLEF_SPECIES[DATASETS[d]].share for d in names])
    new_share = share * np.array([CLEF_SPECIES[DATASETS[d]].unknown for d in names])
    animal = _group_new(rng, p, p.animal)
    n_animals = int(animal.max()) + 1
    in_gallery = np.arange(n_animals) < n_ids + n_new
    of_animal = np.where(in_gallery, rng.choice(len(names), n_animals, p=share / share.sum()),
                         rng.choice(len(names), n_animals, p=new_share / new_share.sum()))

    # Each image's identity (`key`) and the dataset it is filed under (`home`): a known id keeps its
    # animal's dataset even on a conflicting copy of another animal's picture; a train new_whale slot,
    # and a group of new queries, is an identity of its own in its animal's dataset.
    label = p.label
    copy = p.source >= 0
    id_animal = {l: a for l, a, c in zip(label[:n_train], p.animal[:n_train], copy[:n_train]) if l != UNKNOWN and not c}
    key = np.empty(n, dtype=object)
    home = np.empty(n, dtype=np.int64)
    for i in range(n_train):
        own = label[i] != UNKNOWN
        key[i] = ("id", label[i]) if own else ("slot", i)
        home[i] = of_animal[id_animal.get(label[i], animal[i]) if own else animal[i]]
    new = np.zeros(n, bool)
    for i in range(n_train, n):
        if copy[i]:
            key[i], home[i] = key[p.source[i]], home[p.source[i]]
        elif label[i] != UNKNOWN:
            key[i], home[i] = ("id", label[i]), of_animal[id_animal.get(label[i], animal[i])]
        else:
            key[i], home[i], new[i] = ("new", int(animal[i])), of_animal[animal[i]], True
    keys = list(dict.fromkeys(sorted(k for k in key if k[0] == "id")))  # ids in label order, then slots, then groups
    keys += list(dict.fromkeys(k for k in key if k[0] != "id"))
    hexes = dict(zip(keys, _hex_names(rng, len(keys), 6)))
    dataset = np.array([names[h] for h in home], dtype=object)
    identity = np.array([f"{dataset[i]}_{hexes[key[i]]}" for i in range(n)], dtype=object)

    # image ids as the organisers number them: by dataset, the database first, then by file name
    order = sorted(range(n), key=lambda i: (dataset[i], i >= n_train, p.image[i]))
    image_id = np.empty(n, np.int64)
    image_id[order] = np.arange(n)
    species = np.array([DATASETS[names[d]] for d in of_animal[animal]], dtype=object)  # the look follows the pixels
    date, orientation = _dates_and_sides(rng, dataset)
    kit_label = np.where(new, CLEF_UNKNOWN, identity).astype(object)
    kept = {f.name: getattr(p, f.name) for f in fields(p) if f.name not in ("label", "animal", "layout", "species")}
    return ClefPlan(**kept, label=kit_label, animal=animal, layout="animalclef", species=species, dataset=dataset,
                    identity=identity, new=new, image_id=image_id, date=date, orientation=orientation)


def _dates_and_sides(rng: np.random.Generator, dataset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A plausible date (within the dataset's years) and orientation (one its species is photographed from)."""
    n = len(dataset)
    first = np.array([YEARS[d][0] for d in dataset])
    last = np.array([YEARS[d][1] for d in dataset])
    day = rng.integers(0, 365, n)
    years = first + (rng.random(n) * (last - first + 1)).astype(int)
    dates = (np.array(years - 1970, dtype="datetime64[Y]").astype("datetime64[D]") + day).astype(str)
    pick = rng.random(n)
    sides = [ORIENTATIONS[DATASETS[d]][int(u * len(ORIENTATIONS[DATASETS[d]]))] for d, u in zip(dataset, pick)]
    return dates.astype(object), np.array(sides, dtype=object)
