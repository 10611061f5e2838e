"""The blend's inputs, loaded once per split: `prepare(recipe, "val")` reads and checks every
member's prediction set (or top-5 CSV), aligns them on one set of images and one label vocabulary,
loads the truth where the split has one, and finds the leak's candidates (perceptual-hash neighbours
in train). Everything after it (kit/post/pipeline.py: `run`, the fits) is pure and fast on these.

The validation split is the recipe's fold of folds.csv, or with `fold: all` every fold's held-out
images, each predicted by the member's fold model that did not train on it (the members' `oof`
prediction sets); there the leak matches an image only with train images of other folds.

Label codes: `inputs.labels` is the vocabulary. Codes 0..C-1 are the members' score columns
(the first scored member's class order), then the other known identities of train (and of the
truth) sorted, then the unknown label last (`inputs.unknown_code`); -1 marks an empty slot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kit import predset
from kit.data.competition import Competition, load_competition
from kit.data.folds import fold_truth, read_folds
from kit.data.folds import split as split_folds
from kit.data.phash import hashes_for, read_hashes
from kit.errors import KitError
from kit.io import settle
from kit.metric import K as TOP
from kit.metric import read_labelled
from kit.metrics import DEFAULT as DEFAULT_METRIC
from kit.metrics import METRICS, Groups, Metric, Scorer, metric
from kit.post import blend, leak
from kit.post.plugins import auto_calibration
from kit.post.recipe import ALL_FOLDS, BlendRecipe, Member

VIEW_KIND = {"knn": "cosine", "local": "inliers"}  # a view whose sets hold another kind of score (else the view's name)
LEAK_SEARCH_DISTANCE = 8  # prepare() finds duplicates up to this distance (or the recipe's, if larger)

@dataclass
class MemberInput:
    """One recipe member's data for one split, aligned to `Inputs.images` / the score columns."""

    name: str
    kind: str  # logit | cosine | prob | submission
    auto_method: str  # what calibration `auto` means for it
    scores: np.ndarray | None = None  # float32 (N, C), scored members
    codes: np.ndarray | None = None  # int64 (N, 5) by rank, submission members: column codes, C = unknown
    _row_max: blend.RowMax | None = field(default=None, repr=False)
    _transformed: dict = field(default_factory=dict, repr=False)  # calibration -> its matrix (Calibration.transform)
    _calibrated: tuple | None = field(default=None, repr=False)  # (method, p1, p2, the N x C matrix)

    def calibrated(self, method: str, p1: float, p2: float) -> np.ndarray:
        """The scores calibrated by (method, p1, p2), computed once and kept (`Inputs.keep_calibrated`):
        a tuner that only moves the weights then blends cached probabilities, no exp per trial."""
        if self._calibrated is None or self._calibrated[:3] != (method, p1, p2):
            row_max = self.row_max() if method == "softmax" else None
            out = blend.blend_top_k([(self.scores, method, p1, p2, 1.0, row_max)], [], len(self.scores),
                                    self.scores.shape[1], 1, keep=True)[2]
            self._calibrated = (method, p1, p2, out)
        return self._calibrated[3]

    def row_max(self) -> blend.RowMax:
        """The rows' maxima for softmax, found by the first blend (blend.RowMax)."""
        if self._row_max is None:
            self._row_max = blend.RowMax(len(self.scores))
        return self._row_max

    def calibration_input(self, cal) -> np.ndarray:
        """What the blend kernel takes for calibration `cal`: its transform of the scores (computed
        once per parameters, then kept), or the scores."""
        if cal not in self._transformed:
            if len(self._transformed) > 4:  # a tuner moving a transform's parameters: keep a few
                self._transformed.clear()
            self._transformed[cal] = cal.plugin.transform(self.scores, cal.params)
        out = self._transformed[cal]
        return self.scores if out is None else out


@dataclass
class LeakCandidates:
    """Duplicates of each image among the reference (train) images, up to `search_distance`."""

    matches: leak.Matches
    label: np.ndarray  # int64: label code of each pair's reference image
    ref_images: list[str]
    ref_labels: np.ndarray  # int64 codes of the reference images
    ref_hashes: np.ndarray  # uint64
    _conflicts: dict = field(default_factory=dict, repr=False)

    @property
    def search_distance(self) -> int:
        return self.matches.max_distance

    def conflicts_within(self, max_distance: int) -> np.ndarray:
        """(n, 3) reference pairs (i, j, distance) within `max_distance` whose labels differ;
        computed on first use (a reference x reference match), then kept."""
        if max_distance not in self._conflicts:
            self._conflicts[max_distance] = leak.label_conflicts(self.ref_hashes, self.ref_labels, max_distance)
        return self._conflicts[max_distance]


@dataclass
class Inputs:
    split: str
    competition: Competition
    images: list[str]
    labels: list[str]  # the code -> label vocabulary
    n_columns: int  # C: codes 0..C-1 are score columns
    unknown_code: int
    members: list[MemberInput | None]  # per recipe member; None: absent from this split
    member_keys: tuple
    truth: np.ndarray | None = None  # int64 codes (N,), or None
    metric: type[Metric] = METRICS[DEFAULT_METRIC]  # the recipe's: where P(new) places the unknown label
    scorer: Scorer | None = None  # the metric on these images (with truth): what every score here is
    leak: LeakCandidates | None = None
    notes: list[str] = field(default_factory=list)
    keep_calibrated: bool = False  # members keep their calibrated scores (MemberInput.calibrated): for tuners
    _candidates: dict = field(default_factory=dict, repr=False)  # calibrations -> blend.Candidates
    plugin_cache: dict = field(default_factory=dict, repr=False)  # what a step derives once from the inputs

    def __len__(self) -> int:
        return len(self.images)


def member_key(m: Member) -> tuple:
    return (m.model, m.view, m.submission, m.val_submission)


def prepare(recipe: BlendRecipe, split: str, leak_search_distance: int | None = None) -> Inputs:
    """Load, check and align everything `run` needs for one split ("val" or "test")."""
    if split not in predset.SPLITS:
        raise KitError(f"split must be one of {predset.SPLITS}, got {split!r}")
    src = recipe.source
    comp = load_competition(recipe.data, check_images=False)
    images, truth_labels, individuals, ref, where = _split_images(recipe, comp, split)

    # members
    loaded: list[tuple[int, Member, predset.PredictionSet | None]] = []
    digest = comp.digest() if any(m.scored for m in recipe.members) else ""
    for i, m in enumerate(recipe.members):
        if m.scored:
            loaded.append((i, m, _load_member_set(recipe, i, m, split, comp.unknown, digest)))
    sets = [ps for _, _, ps in loaded]
    if sets:
        predset.check_aligned(sets, [f"{src}: members[{i}] ({m.preds_dir(split)})" for i, m, _ in loaded])
        _check_images(sets[0], images, where)
        classes = list(sets[0].classes)
    else:
        classes = comp.known_labels

    known = set(classes)
    extra = sorted((set(ref.labels) | set(comp.train["label"].tolist()) | set(truth_labels or ())) - known - {comp.unknown})
    labels = classes + extra + [comp.unknown]
    code = {lab: c for c, lab in enumerate(labels)}
    unknown_code = len(labels) - 1

    members: list[MemberInput | None] = []
    scored = {i: ps for i, _, ps in loaded}
    for i, m in enumerate(recipe.members):
        if m.scored:
            ps = scored[i]
            scores = np.ascontiguousarray(predset.reindex(ps, images, classes), dtype=np.float32)
            auto = auto_calibration(ps.kind, ps.meta.get("activation"))
            members.append(MemberInput(m.name, ps.kind, auto, scores=scores))
        else:
            path = m.submission_path(split)
            members.append(None if path is None else
                           _load_submission_member(path, m, images, code, len(classes), unknown_code, src, i))
    present = [(mi, m) for mi, m in zip(members, recipe.members) if mi is not None and (m.weight is None or m.weight > 0)]
    if not present:
        raise KitError(f"{src}: no member with a positive weight has {split} predictions")

    truth = None
    if truth_labels is not None:
        truth = np.fromiter((code.get(t, -2) for t in truth_labels), dtype=np.int64, count=len(truth_labels))

    chosen = metric(recipe.metric, f"{src}: metric")
    scorer = None if truth is None else Scorer(chosen, truth, unknown_code,
                                               _groups(comp, images, truth, unknown_code, individuals))
    inputs = Inputs(split, comp, images, labels, len(classes), unknown_code, members,
                    tuple(member_key(m) for m in recipe.members), truth, chosen, scorer)
    inputs.leak = _leak_candidates(recipe, split, images, ref, code, leak_search_distance)
    return inputs


@dataclass
class _Reference:
    """The train images the leak matches a split's images against, their labels, and (with
    out-of-fold members) the folds of both, so an image is never matched in its own fold."""

    images: list[str]
    labels: list[str]
    query_fold: np.ndarray | None = None
    fold: np.ndarray | None = None


def _groups(comp: Competition, images: list[str], truth: np.ndarray, unknown_code: int,
            individuals: list[str] | None) -> Groups | None:
    """What a balanced metric groups these images by: each unknown image's individual (its own
    identity where the data knows it: an identity new to its fold, a synthetic test truth's), each
    image's dataset (AnimalCLEF's metadata); None when the data has neither."""
    datasets = None if comp.datasets is None else [comp.datasets.get(n, "") for n in images]
    return Groups.of_names(individuals, truth == unknown_code, datasets)


def _split_images(recipe: BlendRecipe, comp: Competition, split: str
                  ) -> tuple[list[str], list[str] | None, list[str] | None, _Reference, str]:
    """(the split's images, their truth or None, each one's individual (its identity, also where the
    truth is the unknown label) or None, the leak's reference images, the words for where they come from)."""
    data = Path(recipe.data)
    if split == "val":
        if recipe.fold == -1:
            raise KitError(f"{recipe.source}: fold is -1 (members trained on everything): there is no validation split")
        folds = read_folds(data / "folds.csv", comp.train)
        if recipe.fold == ALL_FOLDS:  # every held-out image; the leak looks in the other folds only
            val_rows = folds[folds["fold"] >= 0].sort_values("fold", kind="stable")
            ref_rows = folds
            where = f"the held-out images of every fold of {data / 'folds.csv'}"
        else:
            ref_rows, val_rows = split_folds(folds, recipe.fold)
            where = f"fold {recipe.fold} of {data / 'folds.csv'}"
        truth_labels = fold_truth(folds, val_rows, comp.unknown)  # new to the fold: unknown
        ref = _Reference(ref_rows["image"].tolist(), ref_rows["label"].tolist(), val_rows["fold"].to_numpy(),
                         ref_rows["fold"].to_numpy())
        return val_rows["image"].tolist(), truth_labels, val_rows["label"].tolist(), ref, where
    images = list(comp.test_images)
    truth_labels = individuals = None
    if comp.truth is not None:
        by_image = dict(zip(comp.truth["image"], comp.truth["label"]))
        missing = [n for n in images if n not in by_image]
        if missing:
            raise KitError(f"{data / 'test_truth.csv'}: {len(missing)} test image(s) have no truth, e.g. {missing[0]!r}")
        truth_labels = [by_image[n] for n in images]
        if "individual" in comp.truth.columns:
            individual = dict(zip(comp.truth["image"], comp.truth["individual"]))
            individuals = [individual[n] for n in images]
    ref = _Reference(comp.train["image"].tolist(), comp.train["label"].tolist())
    return images, truth_labels, individuals, ref, f"the test images of {data}"


def _leak_candidates(recipe: BlendRecipe, split: str, images: list[str], ref: _Reference, code: dict,
                     leak_search_distance: int | None) -> LeakCandidates | None:
    """The leak's candidates: once, up to the largest distance a tuner may ask for; a recipe without
    a leak step skips them, one with the step disabled gets them (a tuner may switch it on)."""
    data = Path(recipe.data)
    hashes_csv = data / "hashes.csv"
    step = recipe.steps.active("leak")
    if recipe.steps.leak is not None and hashes_csv.is_file():
        distance = leak_search_distance if leak_search_distance is not None else max(
            LEAK_SEARCH_DISTANCE, recipe.steps.leak.max_distance if recipe.steps.leak else 0)
        table = read_hashes(hashes_csv)
        query = hashes_for(table, images, hashes_csv, split)
        ref_hashes = hashes_for(table, ref.images, hashes_csv, "train")
        ref_codes = np.fromiter((code[lab] for lab in ref.labels), dtype=np.int64, count=len(ref.images))
        matches = leak.match_hashes(query, ref_hashes, distance)
        if recipe.fold == ALL_FOLDS and ref.query_fold is not None:  # an image's own fold is not its train
            matches = matches.keep(ref.fold[matches.index] != ref.query_fold[matches.query])
        return LeakCandidates(matches, ref_codes[matches.index], ref.images, ref_codes, ref_hashes)
    if step is not None:
        raise KitError(f"{recipe.source}: steps.leak needs {hashes_csv}; make it with `python scripts/phash.py {data}` "
                       f"(or prepare.py), or disable the step")
    return None


def _load_member_set(recipe: BlendRecipe, i: int, m: Member, split: str, unknown: str,
                     digest: str) -> predset.PredictionSet:
    """Member i's prediction set for `split`, checked against the recipe and the competition (`digest`:
    its Competition.digest)."""
    src = recipe.source
    split = recipe.val_split if split == "val" else split
    directory = m.preds_dir(split)
    if not Path(m.model).is_dir():
        raise KitError(f"{src}: members[{i}]: model directory {m.model} not found")
    settle(m.model)  # an export a kill cut short between its renames: finished first, so its sets are one export's
    if not directory.is_dir():
        hint = (" (fold: all needs out-of-fold members: train with fold: all, then export)"
                if split == "oof" else "")
        raise KitError(f"{src}: members[{i}] ({m.name}): no {split} prediction set at {directory}; "
                       f"run `python scripts/export.py {m.model}`{hint}")
    ps = predset.load(directory)
    if ps.kind != VIEW_KIND.get(m.view, m.view):
        raise KitError(f"{directory}: meta.json kind is {ps.kind!r} but the recipe's view is {m.view!r}")
    if ps.meta.get("split") != split:
        raise KitError(f"{directory}: meta.json split is {ps.meta.get('split')!r}, expected {split!r}")
    if split == "val" and "fold" in ps.meta and ps.meta["fold"] != recipe.fold:
        raise KitError(f"{directory}: the member held out fold {ps.meta['fold']}, the recipe validates on fold {recipe.fold}")
    if unknown in ps.classes:
        raise KitError(f"{directory}: classes.txt lists the unknown label {unknown!r}; prediction sets exclude it")
    # the same competition by content (Competition.digest), wherever either lies: a project copied to a
    # laptop blends; another competition generated at the members' path does not. An export older
    # than the digest names only its path.
    made_on, made_of = ps.meta.get("data"), ps.meta.get("competition")
    if made_of is not None:
        if made_of != digest:
            raise KitError(f"{src}: members[{i}] ({m.name}) was exported from another competition than {recipe.data} "
                           f"(made on {made_on}: its train images, labels, test images or folds differ); point the "
                           f"blend's data: at the members' competition, or export them with --data {recipe.data}")
    elif made_on is not None and Path(made_on).resolve() != Path(recipe.data).resolve():
        raise KitError(f"{src}: data is {recipe.data}, but members[{i}] ({m.name}) was exported from {made_on}; "
                       f"point the blend's data: at the members' competition, or export them with --data {recipe.data} "
                       f"(an export by this release is recognised by its content wherever the project lies)")
    ps.meta.setdefault("model", m.name)
    return ps


def _check_images(ps: predset.PredictionSet, images: list[str], where: str) -> None:
    have, want = set(ps.images), set(images)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if extra:
            detail.append(f"{len(extra)} not among them (e.g. {extra[0]!r})")
        raise KitError(f"member {ps.name} ({ps.meta.get('split')}): its images are not {where}: " + "; ".join(detail))


def _load_submission_member(path: Path, m: Member, images: list[str], code: dict, n_columns: int,
                            unknown_code: int, src: str, i: int) -> MemberInput:
    if not path.is_file():
        raise KitError(f"{src}: members[{i}]: submission {path} not found")
    sub = read_labelled(path, "submission member")
    by_image = dict(zip(sub["image"], sub["labels"]))
    missing = [n for n in images if n not in by_image]
    if missing:
        raise KitError(f"{path}: {len(missing)} of the {len(images)} images missing, e.g. {missing[0]!r}")
    codes = np.full((len(images), TOP), -1, dtype=np.int64)
    for r, name in enumerate(images):
        seen = set()
        for k, lab in enumerate(by_image[name][:TOP]):
            c = code.get(lab, -1)
            if c == unknown_code:
                c = n_columns  # the kernel's slot for the unknown label's vote
            # score columns and the unknown label vote; other labels and repeats keep their slot empty
            if 0 <= c <= n_columns and c not in seen:
                codes[r, k] = c
                seen.add(c)
    return MemberInput(m.name, "submission", "rank", codes=codes)


# ------------------------------------------------------------------------------------ running


def val_skip_reason(recipe: BlendRecipe) -> str | None:
    """Why the recipe has no validation split to score, or None."""
    data = Path(recipe.data)
    if recipe.fold == -1:
        return "fold is -1 (members trained on every image)"
    if not (data / "folds.csv").is_file():
        return f"{data / 'folds.csv'} not found (run `python scripts/prepare.py {data}`)"
    for m in recipe.members:
        if m.scored and Path(m.model).is_dir() and not m.preds_dir(recipe.val_split).is_dir():
            return f"member {m.name} has no {recipe.val_split} prediction set ({m.preds_dir(recipe.val_split)})"
    return None


