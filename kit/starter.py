"""Starter recipes fitted to a competition: `python scripts/prepare.py DIR --init WORKDIR`.

Looks at the competition (image and crop sizes, their aspect, the greyscale share, boxes, identities,
the unknown label's share in validation) and at this machine (a GPU or not, and each family's measured
training speed at the chosen input size), then writes a working directory outside the kit:

    WORKDIR/models/{resnet,senet,inception}.yaml   one member per family, data: DIR (absolute)
    WORKDIR/blends/<name>.yaml                     their logits and cosines, automatic weights
    WORKDIR/README.md                              the commands, in order, run from WORKDIR

Every choice is written beside it as a comment, with the figure it came from. Nothing is asked and
nothing existing is overwritten; models/, submissions/ and the study database then live in WORKDIR.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.competition import load_competition
from kit.data.folds import held_unknown_share, read_folds
from kit.data.images import BadImage, open_image
from kit.errors import KitError
from kit.io import write_text
from kit.train.recipe import recipe_from_dict

SAMPLE = 200  # images looked at for sizes and colour
CPU_PIXELS, GPU_PIXELS = 48 * 96, 256 * 512  # input area: the demo's tiny members, the winners' crops
FAMILIES = {  # family -> (CPU backbone, its timm kwargs, GPU backbone, head)
    "resnet": ("resnet18", {"channels": [32, 64, 128, 256], "stem_width": 32}, "resnet50", "arcface"),
    "senet": ("seresnet18", {"channels": [32, 64, 128, 256], "stem_width": 32}, "seresnext50_32x4d", "arcface"),
    "inception": ("inception_next_atto", {}, "inception_v3", "softmax"),
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
    grey_share: float  # sampled photos whose channels are equal


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
    sizes, aspects, greys = [], [], []
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
        aspects.append((box.x1 - box.x0) / max(box.y1 - box.y0, 1) if box is not None else w / h)
    if not sizes:
        raise KitError(f"{root}: none of {len(picked)} sampled train images could be read")
    return Survey(
        root=root.resolve(), layout=comp.layout.name, train_images=len(comp.train), test_images=len(comp.test_images),
        identities=len(counts), unknown=comp.unknown, singletons=float((counts == 1).mean()) if len(counts) else 0.0,
        val_images=len(val), val_unknown_share=held_unknown_share(folds, val, comp.unknown),
        boxes=comp.boxes is not None, photo_size=tuple(int(v) for v in np.median(np.array(sizes), 0)),
        crop_aspect=float(np.median(aspects)), grey_share=float(np.mean(greys)),
    )


def input_size(s: Survey, gpu: bool) -> tuple[int, int]:
    """(H, W): the crops' median aspect at the machine's pixel budget, multiples of 8, never above
    the photos' own median height (upscaling adds no detail)."""
    aspect = min(max(s.crop_aspect, 0.25), 4.0)
    h = math.sqrt((GPU_PIXELS if gpu else CPU_PIXELS) / aspect)
    h = min(h, max(32, s.photo_size[1]))
    h = max(32, int(round(h / 8)) * 8)
    return h, max(32, int(round(h * aspect / 8)) * 8)


def _speed(backbone: str, kwargs: dict, head: str, size: tuple[int, int], batch: int, classes: int) -> float:
    """Images/s of training steps for this family at this size, measured for a few seconds."""
    import torch

    from kit.train.bench import model_throughput

    recipe = recipe_from_dict({"model": {"backbone": backbone, "kwargs": kwargs}, "head": {"type": head},
                               "input": {"size": list(size)}, "sampling": {"batch_size": batch}}, "starter probe")
    recipe = dataclasses.replace(recipe, name="probe")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return model_throughput(recipe, max(classes, 2), 2.0, device)


def _recipe_text(family: str, s: Survey, size: tuple[int, int], gpu: bool, epochs: int, speed: float,
                 minutes: float) -> str:
    cpu_backbone, kwargs, gpu_backbone, head = FAMILIES[family]
    backbone = gpu_backbone if gpu else cpu_backbone
    h, w = size
    colour = "grey" if s.grey_share >= 0.25 else "rgb"
    batch = _batch(gpu)
    lines = [
        f"# {family} member for {s.root.name}: written by prepare.py --init (every choice below says why).",
        f"data: {s.root}",
        "fold: 0                       # validation: fold 0 of folds.csv "
        f"({s.val_images} images, {s.val_unknown_share:.0%} {s.unknown})",
        "model:",
        f"  backbone: {backbone}" + (f"          # {'GPU' if gpu else 'no GPU here'}: "
                                      + ("full size, ImageNet weights (downloaded once by timm)" if gpu
                                         else "half-width, from scratch: minutes on a CPU")),
        f"  pretrained: {'true' if gpu else 'false'}",
    ]
    if kwargs and not gpu:
        lines.append(f"  kwargs: {{channels: {kwargs['channels']}, stem_width: {kwargs['stem_width']}}}")
    lines += [
        "head:",
        f"  type: {head}" + ("                # ArcFace: a margin between identities, and cosines that "
                              "transfer to new ones" if head == "arcface" else "                # the seeds' softmax classifier"),
        f"  embedding_dim: {512 if gpu else 128}",
        "  dropout: 0.1",
    ]
    if head == "arcface" and not gpu:
        lines += ["  scale: 30.0                 # gentler than the full-size 64 / 0.5: from scratch, few epochs",
                  "  margin: 0.3"]
    lines += [
        "input:",
        f"  size: [{h}, {w}]              # H, W: the crops' median aspect {s.crop_aspect:.2f} (W/H) at "
        f"{'256 x 512' if gpu else '48 x 96'} pixels' area; the photos' median is {s.photo_size[0]} x {s.photo_size[1]}",
        f"  colour: {colour}" + (f"                # {s.grey_share:.0%} of sampled photos are greyscale: colour would "
                                  "be a cue those photos lack" if colour == "grey"
                                  else f"                 # {s.grey_share:.0%} of sampled photos are greyscale"),
        f"  boxes: {'true' if s.boxes else 'false'}" + ("                 # bounding_boxes.csv is present: crop to the box"
                                                       if s.boxes else "                # no bounding_boxes.csv: the whole photo"),
        "augment:",
        "  flip: none                  # twin: a mirrored photo is another identity (asymmetric subjects: flukes, "
        "flanks);",
        "                              # same: a mirror keeps the identity (symmetric ones: faces). Your call.",
        "sampling:",
        f"  batch_size: {batch}",
        f"  min_per_id: 4               # {s.singletons:.0%} of the {s.identities:,} identities have one photo: "
        "each appears 4 times an epoch",
        "stages:",
        f"  - {{epochs: {epochs}, lr: {0.001 if gpu else 0.002}, warmup_epochs: 1}}   # {epochs} epochs fit "
        f"{minutes:g} minutes at the {speed:.0f} images/s measured here at this size",
    ]
    return "\n".join(lines) + "\n"


def _blend_text(name: str, s: Survey, families: list[str]) -> str:
    members = []
    for f in families:
        members += [f"  - {{model: models/{f}, view: logit}}",
                    f"  - {{model: models/{f}, view: cosine, calibration: {{method: rank}}}}"]
    return "\n".join([
        f"# The three members' logits and cosines on {s.root.name}: written by prepare.py --init.",
        "# No weights: automatic (sqrt(skill) / near-copies from the validation errors). tune.py searches them.",
        f"name: {name}",
        f"data: {s.root}",
        "fold: 0",
        "members:",
        *members,
        "steps:",
        "  leak: {max_distance: 4}       # test photos that duplicate a train photo (phash) take its identity",
        f"  new_whale: {{proportion: {s.val_unknown_share:.3f}}}   # {s.unknown} first in the share validation holds "
        f"({s.val_unknown_share:.1%}): a rule that transfers between member sets, unlike a threshold",
        "  # balance: {margin: 0.3, min_count: 2}   # the 2019 winners' top-1/top-2 swap: try it, keep it if it helps",
        "pseudo: {threshold: 0.96}",
        "output: submissions",
        "tune:",
        f"  holdout: 0.3                 # of the {s.val_images} validation images, 30% judge what tuning gained",
    ]) + "\n"


def _batch(gpu: bool) -> int:
    return 64 if gpu else 32


def _kit_root() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "kit").is_dir() else None


def init_workdir(data: str | os.PathLike, workdir: str | os.PathLike, minutes: float | None = None,
                 echo=print) -> list[Path]:
    """Write the working directory; returns the files written."""
    import torch

    workdir = Path(workdir).resolve()
    kit = _kit_root()
    if kit is not None and (workdir == kit or kit in workdir.parents):
        raise KitError(f"{workdir}: inside the kit's own repository ({kit}); give a directory outside it")
    s = survey(data)
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in s.root.name) or "blend"
    files = {f"models/{f}.yaml": None for f in FAMILIES} | {f"blends/{name}.yaml": None, "README.md": None}
    taken = [p for p in files if (workdir / p).exists()]
    if taken:
        raise KitError(f"{workdir / taken[0]}: already exists; --init never overwrites (choose another WORKDIR)")
    gpu = torch.cuda.is_available()
    minutes = minutes or (60.0 if gpu else 4.0)
    size = input_size(s, gpu)
    per_epoch = max(1, int((s.train_images - s.val_images) * 1.3))  # oversampling adds about a third
    echo(f"{s.root}: {s.train_images:,} train / {s.test_images:,} test images, {s.identities:,} identities + "
         f"{s.unknown} ({s.val_unknown_share:.0%} of validation), photos ~{s.photo_size[0]} x {s.photo_size[1]}, "
         f"crops {s.crop_aspect:.2f}:1, {s.grey_share:.0%} greyscale, boxes {'yes' if s.boxes else 'no'}")
    for family, (cpu_b, kwargs, gpu_b, head) in FAMILIES.items():
        speed = _speed(gpu_b if gpu else cpu_b, {} if gpu else kwargs, head, size, _batch(gpu), s.identities)
        epochs = int(min(40, max(3, minutes * 60 * speed / per_epoch)))
        files[f"models/{family}.yaml"] = _recipe_text(family, s, size, gpu, epochs, speed, minutes)
        echo(f"  models/{family}.yaml: {gpu_b if gpu else cpu_b} at {size[0]} x {size[1]}, {epochs} epochs "
             f"({speed:.0f} images/s measured, {minutes:g} minutes a member)")
    files[f"blends/{name}.yaml"] = _blend_text(name, s, list(FAMILIES))
    files["README.md"] = "\n".join([
        f"# {name}: a working directory for {s.root}", "",
        "Run from this directory (models/, submissions/ and models/studies.db are written here):", "",
        "```bash", f"K={kit or '<the kit>'}",
        *[f"python $K/scripts/train.py models/{f}.yaml" for f in FAMILIES],
        "python $K/scripts/export.py",
        f"python $K/scripts/blend.py blends/{name}.yaml --members",
        f"python $K/scripts/tune.py blends/{name}.yaml",
        f"python $K/scripts/blend.py blends/{name}.tuned.yaml",
        f"python $K/scripts/score.py --check submissions/{name}_tuned.csv --data {s.root}",
        "```", ""])
    written = []
    for rel, text in files.items():
        write_text(workdir / rel, text)
        written.append(workdir / rel)
    echo(f"wrote {workdir}: " + ", ".join(files))
    return written
