"""The post-processing pipeline: prepare once, run many times (blend.py, tune and the report).

    inputs = prepare(recipe, "val")      # loads, aligns, checks; leak candidates; heavy, once
    result = run(recipe, inputs)         # blend -> leak -> new_whale -> balance -> top-5; ms
    result.map5_by_step                  # {"blend": .., "+ leak": .., "+ new_whale": .., "+ balance": ..}
    run(recipe.with_params({"steps.new_whale.threshold": 0.4}), inputs)   # same inputs, new params

`blend_files(path)` is what `scripts/blend.py` does: val ablation, test submission, pseudo-labels.

Label codes: `inputs.labels` is the vocabulary. Codes 0..C-1 are the members' score columns
(the first scored member's class order), then the other known identities of train (and of the
truth) sorted, then the unknown label last (`inputs.unknown_code`); -1 marks an empty slot.
The state every step edits is small: the blended top-K identities and scores per image
(K = 10), the leak's pinned labels, where new_whale is inserted, and which images swap top-1/2;
`assemble` turns it into the top-5 in one numba pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from numba import njit

from kit import predset
from kit.data.competition import Competition, load_competition
from kit.data.folds import read_folds, split as split_folds
from kit.errors import KitError
from kit.io import atomic_path
from kit.post import balance, blend, leak, new_whale, pseudo
from kit.post.phash import hashes_for, read_hashes
from kit.post.recipe import STEP_ORDER, BlendRecipe, Member, load_recipe
from kit.post.score import K as TOP, average_precision, check_submission, map5, read_labelled

TOP_K = 10  # ranked identities kept per image: 5 + up to 5 leak labels they may duplicate
LEAK_SEARCH_DISTANCE = 8  # prepare() finds duplicates up to this distance (or the recipe's, if larger)
AUTO_METHOD = {"logit": None, "cosine": "affine", "prob": "none"}  # logit: its meta activation


# ------------------------------------------------------------------------------------- inputs
@dataclass
class MemberInput:
    """One recipe member's data for one split, aligned to `Inputs.images` / the score columns."""

    name: str
    kind: str  # logit | cosine | prob | submission
    auto_method: str  # what calibration `auto` means for it
    scores: np.ndarray | None = None  # float32 (N, C), scored members
    codes: np.ndarray | None = None  # int64 (N, 5) column codes by rank, submission members
    _row_max: blend.RowMax | None = field(default=None, repr=False)
    _ranked: np.ndarray | None = field(default=None, repr=False)

    def row_max(self) -> blend.RowMax:
        """The rows' maxima for softmax, found by the first blend (blend.RowMax)."""
        if self._row_max is None:
            self._row_max = blend.RowMax(len(self.scores))
        return self._row_max

    def ranked(self) -> np.ndarray:
        if self._ranked is None:
            self._ranked = blend.reciprocal_rank(self.scores)
        return self._ranked


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
    leak: LeakCandidates | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _member_key(m: Member) -> tuple:
    return (m.model, m.view, m.submission, m.val_submission)


def prepare(recipe: BlendRecipe, split: str, leak_search_distance: int | None = None) -> Inputs:
    """Load, check and align everything `run` needs for one split ("val" or "test")."""
    if split not in predset.SPLITS:
        raise KitError(f"split must be one of {predset.SPLITS}, got {split!r}")
    src = recipe.source
    comp = load_competition(recipe.data, check_images=False)
    data = Path(recipe.data)

    # images of the split, their truth, and the reference images the leak matches them against
    if split == "val":
        if recipe.fold == -1:
            raise KitError(f"{src}: fold is -1 (members trained on everything): there is no validation split")
        folds = read_folds(data / "folds.csv", comp.train)
        ref_rows, val_rows = split_folds(folds, recipe.fold)
        images = val_rows["image"].tolist()
        truth_labels: list[str] | None = val_rows["label"].tolist()
        ref_images, ref_label_names = ref_rows["image"].tolist(), ref_rows["label"].tolist()
        where = f"fold {recipe.fold} of {data / 'folds.csv'}"
    else:
        images = list(comp.test_images)
        truth_labels = None
        if comp.truth is not None:
            by_image = dict(zip(comp.truth["image"], comp.truth["label"]))
            missing = [n for n in images if n not in by_image]
            if missing:
                raise KitError(f"{data / 'test_truth.csv'}: {len(missing)} test image(s) have no truth, e.g. {missing[0]!r}")
            truth_labels = [by_image[n] for n in images]
        ref_images, ref_label_names = comp.train["image"].tolist(), comp.train["label"].tolist()
        where = f"the test images of {data}"

    # members
    loaded: list[tuple[int, Member, predset.PredictionSet | None]] = []
    for i, m in enumerate(recipe.members):
        if m.scored:
            loaded.append((i, m, _load_member_set(recipe, i, m, split, comp.unknown)))
    sets = [ps for _, _, ps in loaded]
    if sets:
        predset.check_aligned(sets)
        _check_images(sets[0], images, where)
        classes = list(sets[0].classes)
    else:
        classes = comp.known_labels

    known = set(classes)
    extra = sorted((set(ref_label_names) | set(comp.train["label"].tolist()) | set(truth_labels or ())) - known - {comp.unknown})
    labels = classes + extra + [comp.unknown]
    code = {lab: c for c, lab in enumerate(labels)}
    unknown_code = len(labels) - 1

    members: list[MemberInput | None] = []
    scored = {i: ps for i, _, ps in loaded}
    for i, m in enumerate(recipe.members):
        if m.scored:
            ps = scored[i]
            scores = np.ascontiguousarray(predset.reindex(ps, images, classes), dtype=np.float32)
            auto = AUTO_METHOD[ps.kind] or str(ps.meta.get("activation", "softmax"))
            members.append(MemberInput(m.name, ps.kind, auto, scores=scores))
        else:
            path = m.submission_path(split)
            members.append(None if path is None else _load_submission_member(path, m, images, code, len(classes), src, i))
    present = [(mi, m) for mi, m in zip(members, recipe.members) if mi is not None and m.weight > 0]
    if not present:
        raise KitError(f"{src}: no member with a positive weight has {split} predictions")

    truth = None
    if truth_labels is not None:
        truth = np.fromiter((code.get(t, -2) for t in truth_labels), dtype=np.int64, count=len(truth_labels))

    inputs = Inputs(split, comp, images, labels, len(classes), unknown_code, members,
                    tuple(_member_key(m) for m in recipe.members), truth)

    # leak candidates: once, up to the largest distance a tuner may ask for; a recipe without a
    # leak step skips them, one with the step disabled gets them (a tuner may switch it on)
    hashes_csv = data / "hashes.csv"
    step = recipe.steps.active("leak")
    if recipe.steps.leak is not None and hashes_csv.is_file():
        distance = leak_search_distance if leak_search_distance is not None else max(
            LEAK_SEARCH_DISTANCE, recipe.steps.leak.max_distance if recipe.steps.leak else 0)
        table = read_hashes(hashes_csv)
        query = hashes_for(table, images, hashes_csv, split)
        ref = hashes_for(table, ref_images, hashes_csv, "train")
        ref_codes = np.fromiter((code[lab] for lab in ref_label_names), dtype=np.int64, count=len(ref_images))
        matches = leak.match_hashes(query, ref, distance)
        inputs.leak = LeakCandidates(matches, ref_codes[matches.index], ref_images, ref_codes, ref)
    elif step is not None:
        raise KitError(f"{src}: steps.leak needs {hashes_csv}; make it with `python scripts/phash.py {data}` "
                       f"(or prepare.py), or disable the step")
    return inputs


def _load_member_set(recipe: BlendRecipe, i: int, m: Member, split: str, unknown: str) -> predset.PredictionSet:
    src = recipe.source
    directory = m.preds_dir(split)
    if not Path(m.model).is_dir():
        raise KitError(f"{src}: members[{i}]: model directory {m.model} not found")
    if not directory.is_dir():
        raise KitError(f"{src}: members[{i}] ({m.name}): no {split} prediction set at {directory}; "
                       f"run `python scripts/export.py {m.model}`")
    ps = predset.load(directory)
    if ps.kind != m.view:
        raise KitError(f"{directory}: meta.json kind is {ps.kind!r} but the recipe's view is {m.view!r}")
    if ps.meta.get("split") != split:
        raise KitError(f"{directory}: meta.json split is {ps.meta.get('split')!r}, expected {split!r}")
    if split == "val" and "fold" in ps.meta and ps.meta["fold"] != recipe.fold:
        raise KitError(f"{directory}: the member held out fold {ps.meta['fold']}, the recipe validates on fold {recipe.fold}")
    if unknown in ps.classes:
        raise KitError(f"{directory}: classes.txt lists the unknown label {unknown!r}; prediction sets exclude it")
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
                            src: str, i: int) -> MemberInput:
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
            # only score columns blend; the unknown label and repeats keep their rank slot empty
            if 0 <= c < n_columns and c not in seen:
                codes[r, k] = c
                seen.add(c)
    return MemberInput(m.name, "submission", "rank", codes=codes)


# ------------------------------------------------------------------------------------ running
@dataclass
class State:
    """What the steps edit; `assemble` makes the top-5 from it."""

    top: np.ndarray  # int64 (N, K) blended top-K codes
    scores: np.ndarray  # float32 (N, K) their blended scores
    pinned: np.ndarray  # int64 (N, P) leak labels, -1 padded
    new_whale_at: np.ndarray  # int64 (N,) rank position of new_whale, -1: none
    swap: np.ndarray  # bool (N,) swap top-1 and top-2
    threshold: float | None = None


@dataclass
class Result:
    images: list[str]
    vocabulary: list[str]
    unknown_code: int
    top5: np.ndarray  # int64 (N, 5) label codes, -1 empty
    top_codes: np.ndarray  # int64 (N, K) blended top-K identities, before the steps
    top_scores: np.ndarray  # float32 (N, K) their blended scores (top_scores[:, 0]: top-1 confidence)
    pinned: np.ndarray  # int64 (N, P) leak labels
    swapped: np.ndarray  # bool (N,)
    threshold: float | None  # the new_whale threshold used (also when set by proportion)
    map5_by_step: dict[str, float] = field(default_factory=dict)  # empty without truth
    ap: np.ndarray | None = None  # per-image AP@5 of the final top-5
    truth: np.ndarray | None = None
    blended: np.ndarray | None = None  # float32 (N, C), only with run(..., keep_scores=True)

    @property
    def map5(self) -> float | None:
        return None if self.ap is None else float(self.ap.mean()) if len(self.ap) else 0.0

    @property
    def labels(self) -> list[list[str]]:
        vocab = np.asarray(self.vocabulary + [""], dtype=object)  # -1 -> ""
        return [[lab for lab in row if lab] for row in vocab[self.top5].tolist()]

    @property
    def new_whale_share(self) -> float:
        return float((self.top5[:, 0] == self.unknown_code).mean()) if len(self.top5) else 0.0

    @property
    def n_leaked(self) -> int:
        return int((self.pinned[:, 0] >= 0).sum()) if self.pinned.shape[1] else 0

    @property
    def n_swapped(self) -> int:
        return int(self.swapped.sum())


@njit(cache=True, nogil=True)
def assemble(top, pinned, new_whale_at, swap, unknown):
    """The top-5: the leak's labels, then the ranking (top-1/2 swapped where asked) with the
    unknown label inserted at its position; no label twice."""
    n, k = top.shape
    out = np.full((n, 5), -1, np.int64)
    for i in range(n):
        m = 0
        for p in range(pinned.shape[1]):
            c = pinned[i, p]
            if c < 0 or m == 5:
                break
            out[i, m] = c
            m += 1
        for p in range(k + 1):
            if m == 5:
                break
            if p == new_whale_at[i]:
                dup = False
                for t in range(m):
                    dup |= out[i, t] == unknown
                if not dup:
                    out[i, m] = unknown
                    m += 1
                    if m == 5:
                        break
            if p == k:
                break
            q = 1 - p if (swap[i] and p < 2) else p
            c = top[i, q]
            dup = False
            for t in range(m):
                dup |= out[i, t] == c
            if not dup:
                out[i, m] = c
                m += 1
    return out


def _step_leak(state: State, step, inputs: Inputs) -> None:
    if inputs.leak is None:
        raise KitError(f"steps.leak is on but {inputs.competition.root / 'hashes.csv'} was not there when the inputs were prepared")
    if step.max_distance > inputs.leak.search_distance:
        raise KitError(f"steps.leak.max_distance {step.max_distance} exceeds the distance the inputs were "
                       f"prepared for ({inputs.leak.search_distance}); pass leak_search_distance to prepare()")
    m = inputs.leak.matches
    state.pinned = leak.leak_labels_of(m.indptr, inputs.leak.label, m.distance, step.max_distance)


def _step_new_whale(state: State, step, inputs: Inputs) -> None:
    state.threshold = new_whale.threshold_of(step, state.scores[:, 0])
    state.new_whale_at = new_whale.insert_positions(state.scores, state.threshold)


def _step_balance(state: State, step, inputs: Inputs) -> None:
    first = state.pinned[:, 0] if state.pinned.shape[1] else np.full(len(state.top), -1, np.int64)
    state.swap = balance.swap_top2(state.top, state.scores, first, step.margin, step.min_count, len(inputs.labels))


# the post-processing steps, in the order they apply (recipe.STEP_ORDER)
STEPS: dict[str, Callable[[State, object, Inputs], None]] = {
    "leak": _step_leak,
    "new_whale": _step_new_whale,
    "balance": _step_balance,
}
assert tuple(STEPS) == STEP_ORDER


def _blend_parts(recipe: BlendRecipe, inputs: Inputs, only: Callable[[str, str], bool] | None = None):
    """The members' contributions for blend.blend_top_k: calibration and normalised weight each."""
    kept = []
    for mi, m in zip(inputs.members, recipe.members):
        if mi is None or m.weight <= 0:
            continue
        method = m.calibration.resolved(mi.auto_method).method if mi.scores is not None else "ranked"
        if only is None or only(method, mi.kind):
            kept.append((mi, m, method))
    total = sum(m.weight for _, m, _ in kept)
    parts, ranked = [], []
    for mi, m, method in kept:
        w, cal = m.weight / total, m.calibration
        if method == "ranked":
            ranked.append((mi.codes, w))
        elif method == "softmax":
            parts.append((mi.scores, "softmax", 1.0 / cal.t, 0.0, w, mi.row_max()))
        elif method == "sigmoid":
            parts.append((mi.scores, "sigmoid", 1.0 / cal.t, 0.0, w, None))
        elif method == "affine":
            parts.append((mi.scores, "affine", cal.a, cal.b, w, None))
        elif method == "rank":
            parts.append((mi.ranked(), "none", 0.0, 0.0, w, None))
        elif method == "none":
            parts.append((mi.scores, "none", 0.0, 0.0, w, None))
        else:  # pragma: no cover - recipe validation rules this out
            raise KitError(f"unknown calibration method {method!r}")
    return parts, ranked


def blend_top(recipe: BlendRecipe, inputs: Inputs, k: int = TOP_K, keep: bool = False,
              only: Callable[[str, str], bool] | None = None):
    """(top-k codes, their blended scores, the N x C blend if `keep`): the weighted mean of the
    calibrated members. `only(method, kind)` keeps a subset (weights renormalised over it)."""
    parts, ranked = _blend_parts(recipe, inputs, only)
    return blend.blend_top_k(parts, ranked, len(inputs.images), inputs.n_columns, k, keep)


def blend_matrix(recipe: BlendRecipe, inputs: Inputs, only: Callable[[str, str], bool] | None = None) -> np.ndarray:
    """The blended scores (N, C), float32."""
    return blend_top(recipe, inputs, 1, True, only)[2]


def run(recipe: BlendRecipe, inputs: Inputs, keep_scores: bool = False) -> Result:
    """blend -> leak -> new_whale -> balance -> top-5 on prepared inputs; MAP@5 after each step
    when the split has truth. A few milliseconds at Kaggle validation scale."""
    keys = tuple(_member_key(m) for m in recipe.members)
    if keys != inputs.member_keys:
        raise KitError(f"{recipe.source}: the recipe's members differ from those the inputs were prepared for; prepare() again")
    top, scores, blended = blend_top(recipe, inputs, TOP_K, keep_scores)
    n = len(inputs.images)
    state = State(top, scores, np.empty((n, 0), np.int64), np.full(n, -1, np.int64), np.zeros(n, np.bool_))
    by_step: dict[str, float] = {}
    truth = inputs.truth
    top5 = None
    if truth is not None:
        top5 = assemble(state.top, state.pinned, state.new_whale_at, state.swap, inputs.unknown_code)
        by_step["blend"] = map5(top5, truth)
    for name, apply in STEPS.items():
        step = recipe.steps.active(name)
        if step is None:
            continue
        apply(state, step, inputs)
        if truth is not None:
            top5 = assemble(state.top, state.pinned, state.new_whale_at, state.swap, inputs.unknown_code)
            by_step[f"+ {name}"] = map5(top5, truth)
    if top5 is None:
        top5 = assemble(state.top, state.pinned, state.new_whale_at, state.swap, inputs.unknown_code)
    return Result(
        images=inputs.images, vocabulary=inputs.labels, unknown_code=inputs.unknown_code, top5=top5,
        top_codes=top, top_scores=scores, pinned=state.pinned, swapped=state.swap, threshold=state.threshold,
        map5_by_step=by_step, ap=None if truth is None else average_precision(top5, truth), truth=truth,
        blended=blended,
    )


def pseudo_confidence(recipe: BlendRecipe, inputs: Inputs, codes: np.ndarray) -> np.ndarray | None:
    """The calibrated probability of `codes` (one per image): see kit.post.pseudo. None when no
    member gives probabilities."""
    if not any(mi is not None and m.weight > 0 and mi.scores is not None
               and pseudo.is_probability(m.calibration.resolved(mi.auto_method).method, mi.kind)
               for mi, m in zip(inputs.members, recipe.members)):
        return None
    probs = blend_matrix(recipe, inputs, only=pseudo.is_probability)
    return probs[np.arange(len(codes)), codes]


# ------------------------------------------------------------------------------- blend.py's job
def format_ablation(result: Result, title: str) -> str:
    """The ablation table: MAP@5 after each step and its gain."""
    lines = [title, f"  {'step':<12} {'MAP@5':>7} {'gain':>8}"]
    prev = None
    for step, value in result.map5_by_step.items():
        gain = "" if prev is None else f"{value - prev:+8.4f}"
        lines.append(f"  {step:<12} {value:7.4f} {gain}")
        prev = value
    extra = [f"new_whale first in {result.new_whale_share:.1%} of images"]
    if result.threshold is not None:
        extra.append(f"threshold {result.threshold:.4g}")
    if result.pinned.shape[1]:
        extra.append(f"leak pinned {result.n_leaked} image(s)")
    if result.n_swapped:
        extra.append(f"balance swapped {result.n_swapped}")
    lines.append("  " + "; ".join(extra))
    return "\n".join(lines)


def _val_skip_reason(recipe: BlendRecipe) -> str | None:
    data = Path(recipe.data)
    if recipe.fold == -1:
        return "fold is -1 (members trained on every image)"
    if not (data / "folds.csv").is_file():
        return f"{data / 'folds.csv'} not found (run `python scripts/prepare.py {data}`)"
    for m in recipe.members:
        if m.scored and Path(m.model).is_dir() and not m.preds_dir("val").is_dir():
            return f"member {m.name} has no val prediction set ({m.preds_dir('val')})"
    return None


def _conflict_note(inputs: Inputs, recipe: BlendRecipe) -> str | None:
    step = recipe.steps.active("leak")
    if inputs.leak is None or step is None:
        return None
    c = inputs.leak.conflicts_within(step.max_distance)
    if not len(c):
        return None
    i, j, d = (int(v) for v in c[0])
    lk = inputs.leak
    lab = inputs.labels
    return (f"warning: {len(c)} pair(s) of train images within phash distance {step.max_distance} carry different "
            f"labels, e.g. {lk.ref_images[i]} ({lab[lk.ref_labels[i]]}) ~ {lk.ref_images[j]} ({lab[lk.ref_labels[j]]}), "
            f"distance {d}")


def _summary(result: Result, inputs: Inputs) -> dict:
    out = {"images": len(inputs.images), "new_whale_share": result.new_whale_share,
           "threshold": result.threshold, "leaked": result.n_leaked, "swapped": result.n_swapped}
    if result.map5_by_step:
        out["map5_by_step"] = dict(result.map5_by_step)
        out["map5"] = result.map5
    return out


def blend_files(recipe_path: str | Path, echo: Callable[[str], None] = print) -> dict:
    """Run a blend recipe: val ablation (printed), test submission and pseudo-labels (written
    atomically, only once everything has been checked). Returns the numbers."""
    recipe = load_recipe(recipe_path)
    report: dict = {"recipe": str(recipe_path), "name": recipe.name}

    skip = _val_skip_reason(recipe)
    if skip:
        echo(f"val: skipped, {skip}")
    else:
        inputs = prepare(recipe, "val")
        result = run(recipe, inputs)
        echo(format_ablation(result, f"val: fold {recipe.fold}, {len(inputs.images)} images, {len(recipe.members)} member(s)"))
        report["val"] = _summary(result, inputs)

    inputs = prepare(recipe, "test")
    result = run(recipe, inputs)
    comp = inputs.competition
    if result.map5_by_step:
        echo(format_ablation(result, f"test: {len(inputs.images)} images, scored against {comp.root / 'test_truth.csv'}"))
    note = _conflict_note(inputs, recipe)  # train duplicates with different labels: told once, from test's reference (all train)
    if note:
        echo(note)
    report["test"] = _summary(result, inputs)
    if inputs.leak is not None and recipe.steps.active("leak") is not None:
        report["leak_conflicts"] = int(len(inputs.leak.conflicts_within(recipe.steps.leak.max_distance)))

    rows = None
    if recipe.pseudo.enabled:
        top1 = result.top_codes[:, 0]
        confidence = pseudo_confidence(recipe, inputs, top1)
        if confidence is None:
            echo("pseudo-labels: none written, no member gives probabilities (see kit/post/pseudo.py)")
        else:
            rows = pseudo.frame(inputs.images, inputs.labels, top1, result.top5[:, 0], confidence, recipe.pseudo.threshold)

    submission = comp.submission_frame(inputs.images, result.labels)
    with atomic_path(recipe.submission_path) as tmp:
        submission.to_csv(tmp, index=False)
        problems = check_submission(tmp, comp)
        if problems:
            raise KitError(f"{recipe.submission_path}: the submission would be invalid: {problems[0]}")
    report["submission"] = str(recipe.submission_path)
    echo(f"wrote {recipe.submission_path} ({len(submission)} images)")
    if rows is not None:
        pseudo.write(recipe.pseudo_path, rows)
        report["pseudo"] = str(recipe.pseudo_path)
        report["pseudo_count"] = len(rows)
        echo(f"wrote {recipe.pseudo_path} ({len(rows)} pseudo-labels, confidence > {recipe.pseudo.threshold:g})")
    return report
