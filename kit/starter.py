"""Starter recipes fitted to a competition: `python scripts/prepare.py DIR --init WORKDIR`.

Looks at the competition (image and crop sizes, their aspect, the greyscale share, boxes, identities,
the unknown label's share in validation, whether a mirrored photo keeps its identity) and at this
machine (a GPU or not, pretrained weights at hand or not, each family's training speed), then
writes a working directory outside the kit:

    WORKDIR/models/{resnet,senet,inception}.yaml   one member per family, data: DIR (absolute)
    WORKDIR/blends/<name>.yaml                     their logits and cosines, automatic weights
    WORKDIR/README.md                              the commands, in order, run from WORKDIR

Members train for a time budget (`stages: [{minutes: M}]`: the loop measures its own speed and sets
the epochs, kit/train/budget.py), from pretrained weights where there are any: a from-scratch CPU
member is the fallback, not the plan. Every choice is written beside it as a comment, with the
figure it came from. Nothing is asked and nothing existing is overwritten; models/, submissions/
and the study database then live in WORKDIR.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.competition import LAYOUTS, load_competition
from kit.data.folds import held_unknown_share, read_folds
from kit.data.images import BadImage, open_image
from kit.data.mirror import FlipMeasure, measure_flip
from kit.errors import KitError
from kit.io import write_text
from kit.metrics import DEFAULT as DEFAULT_METRIC
from kit.pretrained import Weights, resolve_weights
from kit.train.recipe import recipe_from_dict

SAMPLE = 200  # images looked at for sizes and colour
# input area: the demo's tiny members (from scratch); the size ResNet-10t was trained at (the other two
# CPU backbones at 224 x 224: one size for all three, so one crop cache); the winners' crops
SCRATCH_PIXELS, PRETRAINED_CPU_PIXELS, GPU_PIXELS = 48 * 96, 176 * 176, 256 * 512
# epochs a member needs to be useful: from scratch the demo's tiny members learn in 12 and barely beat
# new_whale alone after 3; a pretrained one needs a couple of passes for its new head and embedding
USEFUL_EPOCHS = {"scratch": 10, "pretrained": 2}
# a local matcher needs detail: crops (box or photo) of at least this many pixels, the dog faces of
# issue 23's probe (112 x 112: the right dog's best photo 19 inliers, the best wrong one 7) pass
LOCAL_MIN_PIXELS = 96 * 96


@dataclass(frozen=True)
class Family:
    head: str
    scratch: str  # from scratch on a CPU, at SCRATCH_PIXELS
    scratch_kwargs: dict
    cpu: str  # pretrained on a CPU, at PRETRAINED_CPU_PIXELS: small networks
    gpu: str  # on a GPU, at GPU_PIXELS: the 2019 winners' families
    # what the demo's hand-written tiny member of the family learns best with (models/*_tiny.yaml)
    embedding: int = 128
    dropout: float = 0.1
    optimizer: str = "adam"
    weight_decay: float = 1e-4


HALF_WIDTH = {"channels": [32, 64, 128, 256], "stem_width": 32}
FAMILIES = {
    "resnet": Family("arcface", "resnet18", HALF_WIDTH, "resnet10t.c3_in1k", "resnet50"),
    "senet": Family("arcface", "seresnet18", HALF_WIDTH, "legacy_seresnet18.in1k", "seresnext50_32x4d"),
    "inception": Family("softmax", "inception_next_atto", {}, "inception_next_atto.sail_in1k", "inception_v3",
                        embedding=256, dropout=0.2, optimizer="adamw", weight_decay=0.05),
}


@dataclass
class Survey:
    """What the starter recipes are fitted to."""

    root: Path
    layout: str
    train_images: int
    test_images: int
    identities: int
    unknown: str
    singletons: float  # share of identities with one train image
    val_images: int
    val_unknown_share: float  # the unknown label's share in fold 0 (what test is assumed to hold)
    boxes: bool
    photo_size: tuple[int, int]  # median (W, H) of the sampled photos
    crop_aspect: float  # median W / H of what the network sees (box or photo)
    crop_pixels: float  # median area of that crop in the photo's own pixels (what a matcher sees)
    grey_share: float  # sampled photos whose channels are equal
    flip: FlipMeasure | None = None


def _is_grey(image: Image.Image) -> bool:
    if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((32, 32)), np.int16)
    return float(np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()) < 2.0


def survey(root: str | os.PathLike, seed: int = 0) -> Survey:
    """Look at a prepared competition (folds.csv present)."""
    root = Path(root)
    comp = load_competition(root)
    folds_csv = root / "folds.csv"
    if not folds_csv.is_file():
        raise KitError(f"{folds_csv}: not found; run python scripts/prepare.py {root} first")
    folds = read_folds(folds_csv, comp.train)
    val = folds[folds["fold"] == 0]
    counts = comp.train.loc[comp.train["label"] != comp.unknown, "label"].value_counts()
    rng = np.random.default_rng(seed)
    names = comp.train["image"].to_numpy()
    picked = names[rng.choice(len(names), min(SAMPLE, len(names)), replace=False)]
    sizes, aspects, areas, greys = [], [], [], []
    for name in picked:
        path = comp.image_path(name)
        try:
            with open_image(path) as im:
                w, h = im.size
                im.draft("RGB", (64, 64))  # a JPEG decodes at 1/8 scale: enough for the colour check
                greys.append(_is_grey(im))
        except BadImage:
            continue  # a bad image: prepare and training name it
        sizes.append((w, h))
        box = None if comp.boxes is None or name not in comp.boxes.index else comp.boxes.loc[name]
        cw, ch = (box.x1 - box.x0, box.y1 - box.y0) if box is not None else (w, h)
        aspects.append(cw / max(ch, 1))
        areas.append(float(cw * ch))
    if not sizes:
        raise KitError(f"{root}: none of {len(picked)} sampled train images could be read")
    aspect = float(np.median(aspects))
    return Survey(
        root=root.resolve(), layout=comp.layout.name, train_images=len(comp.train), test_images=len(comp.test_images),
        identities=len(counts), unknown=comp.unknown, singletons=float((counts == 1).mean()) if len(counts) else 0.0,
        val_images=len(val), val_unknown_share=held_unknown_share(folds, val, comp.unknown),
        boxes=comp.boxes is not None, photo_size=tuple(int(v) for v in np.median(np.array(sizes), 0)),
        crop_aspect=aspect, crop_pixels=float(np.median(areas)), grey_share=float(np.mean(greys)),
        flip=measure_flip(comp, aspect, comp.boxes is not None, seed),
    )


def input_size(s: Survey, pixels: int) -> tuple[int, int]:
    """(H, W): the crops' median aspect at `pixels` of area, multiples of 8, never above the photos'
    own median height (upscaling adds no detail)."""
    aspect = min(max(s.crop_aspect, 0.25), 4.0)
    h = math.sqrt(pixels / aspect)
    h = min(h, max(32, s.photo_size[1]))
    h = max(32, int(round(h / 8)) * 8)
    return h, max(32, int(round(h * aspect / 8)) * 8)


# --------------------------------------------------------------------------------------- the plan
@dataclass
class MemberPlan:
    family: str
    backbone: str
    weights: Weights
    size: tuple[int, int]
    gpu: bool
    speed: float = 0.0  # images/s measured here
    epochs: float = 0.0  # what the budget buys at that speed (an estimate: the loop measures its own)

    @property
    def kind(self) -> str:
        return "pretrained" if self.weights.pretrained else "scratch"

    @property
    def scratch_cpu(self) -> bool:
        return not self.gpu and not self.weights.pretrained


def plan_member(family: str, s: Survey, gpu: bool, choice: str, echo=print) -> MemberPlan:
    f = FAMILIES[family]
    if gpu:
        weights = resolve_weights(f.gpu, choice, echo)
        return MemberPlan(family, f.gpu, weights, input_size(s, GPU_PIXELS), True)
    weights = resolve_weights(f.cpu, choice, echo)
    if weights.pretrained:
        return MemberPlan(family, f.cpu, weights, input_size(s, PRETRAINED_CPU_PIXELS), False)
    return MemberPlan(family, f.scratch, weights, input_size(s, SCRATCH_PIXELS), False)


def _recipe(plan: MemberPlan, s: Survey) -> dict:
    """The member's recipe as plain data (what the YAML says, without its comments)."""
    f = FAMILIES[plan.family]
    model = {"backbone": plan.backbone, "pretrained": plan.weights.source == "hub"}
    if plan.weights.file is not None:
        model["pretrained_file"] = str(plan.weights.file)
    if plan.scratch_cpu and f.scratch_kwargs:  # half width: what learns from scratch in minutes
        model["kwargs"] = dict(f.scratch_kwargs)
    head = {"type": f.head, "embedding_dim": 512 if plan.gpu else max(256, f.embedding) if plan.weights.pretrained
            else f.embedding, "dropout": f.dropout}
    if f.head == "arcface" and not plan.gpu:
        head |= {"scale": 30.0, "margin": 0.3}
    optim = {"optimizer": f.optimizer, "weight_decay": f.weight_decay}
    if plan.weights.pretrained:
        optim["head_lr"] = 10.0
    return {"model": model, "head": head, "input": {"size": list(plan.size)},
            "sampling": {"batch_size": _batch(plan.gpu)}, "optim": optim}


def _speed(plan: MemberPlan, s: Survey) -> float:
    """Images/s of training steps for this member at its size (kit/train/speed.steady_speed: the
    median step after warm-up, not a mean that one slow step on a busy machine skews)."""
    import torch

    from kit.train.speed import steady_speed

    raw = _recipe(plan, s)
    raw["model"] = {k: v for k, v in raw["model"].items() if k not in ("pretrained", "pretrained_file")}
    recipe = dataclasses.replace(recipe_from_dict(raw, "starter probe"), name="probe")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return steady_speed(recipe, max(s.identities, 2), device)


def _recipe_text(plan: MemberPlan, s: Survey, minutes: float, per_epoch: int) -> str:
    f = FAMILIES[plan.family]
    raw = _recipe(plan, s)
    h, w = plan.size
    colour = "grey" if s.grey_share >= 0.25 else "rgb"
    pixels = "256 x 512" if plan.gpu else "176 x 176" if plan.weights.pretrained else "48 x 96"
    why_size = ("the winners' crops on a GPU" if plan.gpu else "the size it was trained at" if plan.weights.pretrained
                else "what a CPU learns from scratch in minutes")
    lines = [
        f"# {plan.family} member for {s.root.name}: written by prepare.py --init (every choice below says why).",
        f"data: {s.root}",
        "fold: 0                       # validation: fold 0 of folds.csv "
        f"({s.val_images} images, {s.val_unknown_share:.0%} {s.unknown})",
        "model:",
        f"  backbone: {plan.backbone}" + ("          # " + ("GPU: full size" if plan.gpu else "no GPU here: small")
                                          + (" and pretrained" if plan.weights.pretrained else ", from scratch")),
        f"  pretrained: {'true' if raw['model']['pretrained'] else 'false'}          # {plan.weights.why}",
    ]
    if plan.weights.file is not None:
        lines.append(f"  pretrained_file: {plan.weights.file}")
    if "kwargs" in raw["model"]:
        kw = raw["model"]["kwargs"]
        lines.append(f"  kwargs: {{channels: {kw['channels']}, stem_width: {kw['stem_width']}}}   # half width: "
                     "learns from scratch in minutes")
    head = raw["head"]
    lines += [
        "head:",
        f"  type: {f.head}" + ("                # ArcFace: a margin between identities, and cosines that "
                               "transfer to new ones" if f.head == "arcface" else "                # the seeds' softmax classifier"),
        f"  embedding_dim: {head['embedding_dim']}",
        f"  dropout: {head['dropout']:g}",
    ]
    if "scale" in head:
        lines += ["  scale: 30.0                 # gentler than the full-size 64 / 0.5: few epochs on a CPU",
                  "  margin: 0.3"]
    flip = s.flip
    lines += [
        "input:",
        f"  size: [{h}, {w}]              # H, W: the crops' median aspect {s.crop_aspect:.2f} (W/H) at {pixels} "
        f"pixels' area ({why_size}); the photos' median is {s.photo_size[0]} x {s.photo_size[1]}",
        f"  colour: {colour}" + (f"                # {s.grey_share:.0%} of sampled photos are greyscale: colour would "
                                  "be a cue those photos lack" if colour == "grey"
                                  else f"                 # {s.grey_share:.0%} of sampled photos are greyscale"),
        f"  boxes: {'true' if s.boxes else 'false'}" + ("                 # bounding_boxes.csv is present: crop to the box"
                                                       if s.boxes else "                # no bounding_boxes.csv: the whole photo"),
        "augment:",
        *_flip_lines(plan, flip),
        "sampling:",
        f"  batch_size: {_batch(plan.gpu)}",
        f"  min_per_id: 4               # {s.singletons:.0%} of the {s.identities:,} identities have one photo: "
        "each appears 4 times an epoch",
    ]
    optim = raw["optim"]
    lines += ["optim:", f"  optimizer: {optim['optimizer']}" + ("                # as the demo's hand-written member of "
                                                                  "this family" if not plan.gpu else ""),
              f"  weight_decay: {optim['weight_decay']:g}"]
    if plan.weights.pretrained:
        lines += ["  head_lr: 10                  # the new head and embedding learn 10x faster than the "
                  "pretrained backbone (Happywhale 2022's 1st place)"]
    lr, warmup = (0.001, 1) if plan.gpu else (0.0003, 0.3) if plan.weights.pretrained else (0.002, 1)
    estimate = (f"~{plan.epochs:.0f} epoch(s) of {per_epoch:,} images at the {plan.speed:.0f} images/s --init measured"
                if plan.speed else "")
    lines += [
        "stages:",
        f"  - {{minutes: {minutes:g}, lr: {lr:g}, warmup_epochs: {warmup:g}}}   # as many epochs as fit {minutes:g} "
        f"minutes: the loop measures its own speed and says what it chose ({estimate})",
    ]
    return "\n".join(lines) + "\n"


def flip_choice(plan: MemberPlan, flip: FlipMeasure | None) -> str:
    """What the member does with mirrors: `same` for a symmetric subject; for an asymmetric one `twin`
    (a mirror trains as a new animal, the 2019 winners' choice) on a GPU only: it doubles the
    identities a small budget must learn (a 12-epoch ResNet-18 from scratch on synthetic small lost
    0.049 MAP@5 on test with its logits, 0.067 with its cosines), so a CPU member leaves mirrors out."""
    if flip is None or flip.choice == "none":
        return "none"
    return "twin" if flip.choice == "twin" and plan.gpu else flip.choice if flip.choice == "same" else "none"


def _flip_lines(plan: MemberPlan, flip: FlipMeasure | None) -> list[str]:
    choice = flip_choice(plan, flip)
    why = flip.why() if flip is not None else "not measured"
    lines = [f"  flip: {choice}                  # {why}"]
    if flip is not None and flip.choice == "twin" and choice == "none":
        lines.append("                              # twin (mirrors as new animals) doubles the identities to learn: "
                     "worth it on a GPU, not in minutes on a CPU")
    return lines


def _metric_of(layout: str) -> str:
    return next((lay.metric for lay in LAYOUTS if lay.name == layout), DEFAULT_METRIC)


def _blend_text(name: str, s: Survey, families: list[str], local: bool = False) -> str:
    members = []
    for f in families:
        members += [f"  - {{model: models/{f}, view: logit}}",
                    f"  - {{model: models/{f}, view: cosine, calibration: {{method: rank}}}}"]
    if local:
        members.append("  - {model: models/local, view: local}   # scripts/match.py: inlier counts, calibrated on validation")
    what = ("The three members' logits and cosines, and the local matcher (scripts/match.py blends/"
            f"{name.removesuffix('-local')}.yaml makes it)" if local else "The three members' logits and cosines")
    return "\n".join([
        f"# {what} on {s.root.name}: written by prepare.py --init.",
        "# No weights: ensemble selection picks them on validation (weights: select; `auto` is sqrt(skill) /",
        "# near-copies, which under-weights a member far ahead of the others, as a matcher can be). tune.py searches them.",
        f"name: {name}",
        f"metric: {_metric_of(s.layout)}  # the competition's own (kit/metrics/): what every fit, trial and table scores",
        "weights: select",
        f"data: {s.root}",
        "fold: 0",
        "members:",
        *members,
        "steps:",
        "  leak: {max_distance: 4}       # test photos that duplicate a train photo (phash) take its identity",
        f"  new_whale: {{fit: threshold}}  # {s.unknown} before the first identity below the threshold that scores best "
        f"on validation: weak members get {s.unknown} first nearly everywhere, strong ones only where unsure",
        "  # balance: {margin: 0.3, min_count: 2}   # the 2019 winners' top-1/top-2 swap: try it, keep it if it helps",
        "pseudo: {threshold: 0.96}",
        "output: submissions",
        "tune:",
        f"  holdout: 0.3                 # of the {s.val_images} validation images, 30% judge what tuning gained",
    ]) + "\n"


def _batch(gpu: bool) -> int:
    return 64 if gpu else 32


def kit_root() -> Path | None:
    """The checkout this code runs from (scripts/ put it first on the path), if it is one."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "kit").is_dir() else None


def budget_line(plans: list[MemberPlan], minutes: float) -> str | None:
    """One line when the budget cannot buy a useful number of epochs (USEFUL_EPOCHS) for some member,
    with what would: more minutes, the whole budget on fewer members, or a smaller input."""
    short = [p for p in plans if p.speed and p.epochs < USEFUL_EPOCHS[p.kind]]
    if not short:
        return None
    worst = min(short, key=lambda p: p.epochs / USEFUL_EPOCHS[p.kind])
    need = USEFUL_EPOCHS[worst.kind]
    factor = need / max(worst.epochs, 1e-9)
    h, w = worst.size
    ways = [f"give --minutes {math.ceil(minutes * factor):g}"]
    members = int(len(plans) / factor)
    if members >= 1:  # the whole budget on fewer members
        ways.append(f"train {members} member(s) with the {len(plans) * minutes:g} minutes of all {len(plans)}")
    smaller = (int(h / math.sqrt(factor) / 8) * 8, int(w / math.sqrt(factor) / 8) * 8)  # speed ~ 1 / pixels
    if min(smaller) >= 32:
        ways.append(f"a smaller input (size: [{smaller[0]}, {smaller[1]}])")
    return (f"warning: {minutes:g} minutes buy ~{worst.epochs:.1f} epoch(s) of models/{worst.family}.yaml at {h} x {w} "
            f"({worst.speed:.0f} images/s here), fewer than the {need} a {worst.kind} member needs to learn "
            f"(kit.starter.USEFUL_EPOCHS): " + ", or ".join(ways))


def init_workdir(data: str | os.PathLike, workdir: str | os.PathLike, minutes: float | None = None,
                 pretrained: str = "auto", echo=print) -> list[Path]:
    """Write the working directory; returns the files written."""
    import torch

    workdir = Path(workdir).resolve()
    kit = kit_root()
    if kit is not None and (workdir == kit or kit in workdir.parents):
        raise KitError(f"{workdir}: inside the kit's own repository ({kit}); give a directory outside it")
    if minutes is not None and minutes <= 0:
        raise KitError(f"--minutes must be > 0, got {minutes:g}")
    s = survey(data)
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in s.root.name) or "blend"
    local = s.crop_pixels >= LOCAL_MIN_PIXELS  # a local matcher finds the marks in crops this large
    final = f"{name}-local" if local else name  # the blend to tune and submit
    files = {f"models/{f}.yaml": None for f in FAMILIES} | {f"blends/{n}.yaml": None for n in {name, final}} | {
        "README.md": None}
    taken = [p for p in files if (workdir / p).exists()]
    if taken:
        raise KitError(f"{workdir / taken[0]}: already exists; --init never overwrites (choose another WORKDIR)")
    gpu = torch.cuda.is_available()
    minutes = minutes or (60.0 if gpu else 4.0)
    per_epoch = max(1, int((s.train_images - s.val_images) * 1.3))  # oversampling adds about a third
    echo(f"{s.root}: {s.train_images:,} train / {s.test_images:,} test images, {s.identities:,} identities + "
         f"{s.unknown} ({s.val_unknown_share:.0%} of validation), photos ~{s.photo_size[0]} x {s.photo_size[1]}, "
         f"crops {s.crop_aspect:.2f}:1, {s.grey_share:.0%} greyscale, boxes {'yes' if s.boxes else 'no'}")
    plans = []
    for family in FAMILIES:
        plan = plan_member(family, s, gpu, pretrained, echo)
        if not plans:  # the measured choice, and what the members do with it on this machine
            chosen = flip_choice(plan, s.flip)
            echo(f"  flip: {chosen} ({s.flip.why()}" +
                 (f"; {s.flip.choice} on a GPU, not in minutes on a CPU)" if chosen != s.flip.choice else ")"))
        plan.speed = _speed(plan, s)
        plan.epochs = minutes * 60 * plan.speed / per_epoch
        plans.append(plan)
        files[f"models/{family}.yaml"] = _recipe_text(plan, s, minutes, per_epoch)
        echo(f"  models/{family}.yaml: {plan.backbone} at {plan.size[0]} x {plan.size[1]}, {plan.weights.why}; "
             f"{minutes:g} minutes (~{plan.epochs:.1f} epochs at the {plan.speed:.0f} images/s measured here)")
    short = budget_line(plans, minutes)
    if short:
        echo(short)
    files[f"blends/{name}.yaml"] = _blend_text(name, s, list(FAMILIES))
    side = math.sqrt(s.crop_pixels)
    if local:
        files[f"blends/{final}.yaml"] = _blend_text(final, s, list(FAMILIES), local=True)
        have_cv2 = importlib.util.find_spec("cv2") is not None
        echo(f"  blends/{final}.yaml: the three members and a local matcher (the crops are ~{side:.0f} px a side, "
             f"enough detail to match)" + ("" if have_cv2 else "; it needs pip install 'whale-kit[local]'"))
    else:
        echo(f"  no local matcher: the crops are ~{side:.0f} px a side, fewer than the {math.sqrt(LOCAL_MIN_PIXELS):.0f} "
             "a matcher needs to find an animal's marks")
    files["README.md"] = "\n".join([
        f"# {name}: a working directory for {s.root}", "",
        "Run from this directory (models/, submissions/ and models/studies.db are written here):", "",
        "```bash", f"K={kit or '<the kit>'}",
        *[f"python $K/scripts/train.py models/{f}.yaml" for f in FAMILIES],
        "python $K/scripts/export.py",
        *([f"python $K/scripts/match.py blends/{name}.yaml    # the local member: each query's top 50 identities "
           "of that blend, matched"] if local else []),
        f"python $K/scripts/blend.py blends/{final}.yaml --members",
        f"python $K/scripts/tune.py blends/{final}.yaml",
        f"python $K/scripts/blend.py blends/{final}.tuned.yaml",
        f"python $K/scripts/score.py --check submissions/{final}_tuned.csv --data {s.root}",
        "```", ""])
    written = []
    for rel, text in files.items():
        write_text(workdir / rel, text)
        written.append(workdir / rel)
    echo(f"wrote {workdir}: " + ", ".join(files))
    return written
