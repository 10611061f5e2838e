"""Prepare a competition directory for the flow: validation folds and perceptual hashes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from kit.data.competition import load_competition
from kit.data.folds import held_unknown_share, make_folds, write_folds
from kit.data.phash import competition_hashes  # for the leak step (kit.post): Pillow + numba, no torch
from kit.data.workdir import check_writable
from kit.io import outputs, write_csv


def prepare(data: str | Path, n_folds: int = 3, seed: int = 0, echo: Callable[[str], None] = print,
            unknown_share: float | None = None) -> None:
    """Check the competition, then write `folds.csv` and `hashes.csv` into it: both, or (on any
    failure, an unreadable image say) neither. `unknown_share`: see kit.data.folds.make_folds."""
    data = Path(data)
    comp = load_competition(data)
    check_writable(data, "prepare")
    folds = make_folds(comp.train, comp.unknown, n_folds=n_folds, seed=seed, unknown_share=unknown_share)
    held = folds[folds["fold"] == 0]
    with outputs(echo) as out:
        write_folds(data / "folds.csv", folds, out)
        write_csv(data / "hashes.csv", competition_hashes(comp), out)
    echo(f"{data}: {comp.layout.name} layout, {len(comp.train):,} train / {len(comp.test_images):,} test images, "
         f"{len(comp.known_labels):,} identities + {comp.unknown}")
    unknown = held_unknown_share(folds, held, comp.unknown)
    new = round(unknown * len(held)) - int((held["label"] == comp.unknown).sum())  # identities seen once, held out
    echo(f"  folds.csv: {n_folds} fold(s) of {len(held)} images each ({unknown:.0%} {comp.unknown}"
         + (f": {new} identities seen once, new to the fold" if new else "") + ")")
    if unknown_share is not None and unknown < unknown_share - 0.01:
        echo(f"  note: {unknown:.0%} {comp.unknown} in fold 0, not the {unknown_share:.0%} asked for: the data has too few "
             f"{comp.unknown} images and identities seen once for more")
    echo(f"  hashes.csv: perceptual hashes of {len(comp.train) + len(comp.test_images):,} images")
