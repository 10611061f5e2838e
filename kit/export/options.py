"""export_member's settings as one checked object, parsed by the engine every recipe uses
(kit.config.build): a library caller's `export_member(m, batch=0)` and scripts/export.py's flags
meet the same checks, in the settings' own words."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kit.config import Interval, build, param

PROVIDERS = ("auto", "cpu", "cuda")
TTA_MODES = ("auto", "flip", "none")
COSINE_MODES = ("centre", "nearest")


@dataclass(frozen=True)
class ExportOptions:
    batch: int = param(32, check=Interval(1, None), help="images per inference batch")
    provider: Literal[PROVIDERS] = param("auto", help="onnxruntime's execution provider (auto: CUDA when it has it)")
    skip_infer: bool = param(False, help="export and check model.onnx only, no prediction sets")
    force: bool = param(False, help="redo a member whose outputs are newer than its checkpoint")
    fp16: bool = param(False, help="also model.fp16.onnx, checked, and infer with it")
    tta: Literal[TTA_MODES] = param("auto", help="flip TTA; auto: on for members that trained on mirrors")
    cosine: Literal[COSINE_MODES] = param("centre", help="the cosine view: to each identity's centre or nearest image")
    new_identities: bool = param(False, help="the cosine view: also gallery identities the member was not trained on")
    knn: int = param(0, check=Interval(0, None), help="neighbours of the knn view (0: no knn view)")
    workers: int | None = param(None, check=Interval(0, None), help="image-reading threads (None or 0: the cores)")
    threads: int | None = param(None, check=Interval(0, None), help="onnxruntime's CPU threads (None or 0: the cores)")

    @classmethod
    def of(cls, **settings) -> "ExportOptions":
        """The settings checked: an unknown key or a value out of range is one KitError naming it."""
        return build(cls, settings, "export_member")

    def recorded(self, data_dir: Path | None) -> dict:
        """What export.json records of them: outputs made with other options are redone."""
        return {"data": str(data_dir) if data_dir else None, "tta": self.tta, "cosine": self.cosine,
                "new_identities": self.new_identities, "fp16": self.fp16,
                **({"knn": self.knn} if self.knn else {})}  # without the view: the options of before
