"""The post-processor's plug-ins: steps and calibrations, each one file, found by its registry.

A step (kit/post/steps/<name>.py) edits the blended ranking after the blend: its `Params` are a
frozen dataclass whose fields carry their constraint and tuning range (`kit.config.param`), its
`order` places it in the pipeline, `apply(state, params, inputs)` does the work. A calibration
(kit/post/calibrations/<name>.py) turns one member's scores into what the blend averages.

Everything else iterates the registries: the blend recipe's parser ("did you mean" included),
`BlendRecipe.tunable_params`, the tuner's search space (kit/tune/space.py), the pipeline's order,
the ablation table and the docs table (`docs_table`, in docs/recipes.md). Adding a step or a
calibration is one new file in its package, and its test; `STEPS.register` / `unregister` add and
remove one at run time (tests/post/test_plugins.py does, with a step that does nothing). A plug-in
registered at run time lives in that process only: `tune.py --jobs` workers import the packages
afresh, so a plug-in meant for tuning is a file in its package.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kit.config import Registry, param, tuning_of
from kit.metrics import METRICS


@dataclass(frozen=True)
class StepParams:
    """What every step's parameters share: `enabled: false` keeps a step in the recipe, switched off."""

    enabled: bool = param(True, help="false: keep the step in the recipe but skip it")


class Step:
    """A post-processing step: subclass, set the class attributes, define `apply`, register."""

    name: ClassVar[str]
    order: ClassVar[int]  # steps run by ascending order
    help: ClassVar[str]  # one line for the docs table
    Params: ClassVar[type]  # a frozen dataclass deriving from StepParams
    # at most one of these keys is given: setting one clears the others (new_whale's threshold | proportion)
    exclusive: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def data_defaults(cls, params, val_inputs) -> dict[str, Any]:
        """Values the step takes from the data when the recipe leaves them out, worked out where the
        data is loaded (kit.post.fits.with_data_defaults; `val_inputs`: the validation split's
        kit.post.inputs.Inputs, or None without one). Default: none."""
        return {}

    @staticmethod
    def apply(state, params, inputs) -> None:
        """Edit the pipeline's state (kit.post.pipeline.State) in place."""
        raise NotImplementedError


class CalibrationRegistry(Registry):
    def register(self, plugin):
        # the tuner's cached blend applies the kernel to the scores: a transform would be skipped there
        if plugin.kernel != "none" and plugin.transform is not Calibration.transform:
            raise ValueError(f"calibration {plugin.name!r}: a kernel ({plugin.kernel}) or a transform, not both")
        return super().register(plugin)


class Calibration:
    """A member calibration: subclass, set the class attributes, register. Either the blend kernel
    applies it on the fly (`kernel`, `kernel_params`: softmax, sigmoid, affine; kit/post/blend.py),
    or `transform` computes the calibrated matrix once (kept per member) and the kernel takes it
    as it is."""

    name: ClassVar[str]
    help: ClassVar[str]
    Params: ClassVar[type]  # a frozen dataclass (no fields: nothing to set)
    kernel: ClassVar[str] = "none"  # softmax | sigmoid | affine | none
    nonnegative: ClassVar[bool] = False  # what reaches the blend is >= 0 (the tuner's cached candidate blend needs it)

    @staticmethod
    def kernel_params(params) -> tuple[float, float]:
        """The kernel's (p1, p2)."""
        return 0.0, 0.0

    @staticmethod
    def transform(scores: np.ndarray, params) -> np.ndarray | None:
        """The calibrated (N, C) float32 matrix, or None: the scores go to the kernel as they are."""
        return None

    @staticmethod
    def yields_probability(kind: str) -> bool:
        """Whether it gives a probability for a prediction set of this kind (logit | cosine | prob | inliers)."""
        return False

    @staticmethod
    def needs_fit(params) -> bool:
        """Whether parameters left unset are fitted on validation first (`fit`; kit.post.fits.fit_calibrations)."""
        return False

    @staticmethod
    def fit(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Parameters fitted on validation scores (N, C) and each row's true column (-1: none of them)."""
        raise NotImplementedError


STEPS = Registry("step")
CALIBRATIONS = CalibrationRegistry("calibration")


def steps_in_order() -> list[type[Step]]:
    return sorted(STEPS.values(), key=lambda s: s.order)


def tunable_fields(params_cls: type) -> list[str]:
    """The fields of a plug-in's Params that a tuner may search (those with a tuning range)."""
    return [f.name for f in dataclasses.fields(params_cls) if tuning_of(params_cls, f.name) is not None]


def auto_calibration(kind: str, activation: str | None) -> str:
    """What calibration `auto` means for a prediction set: a logit set's own activation (softmax
    or sigmoid, from its meta), `affine` for cosines, `none` for probabilities, `inliers` (fitted on
    validation) for a matcher's inlier counts."""
    return {"logit": activation or "softmax", "cosine": "affine", "prob": "none", "inliers": "inliers"}[kind]


# the calibration `auto` stands for in a recipe, by view (what its tunable parameters are)
AUTO_BY_VIEW = {"logit": "softmax", "cosine": "affine", "knn": "affine", "local": "inliers"}


def load_plugins() -> None:
    """Import every module of kit/post/steps and kit/post/calibrations: each registers itself."""
    for package in ("kit.post.steps", "kit.post.calibrations"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{package}.{info.name}")


# ------------------------------------------------------------------------------------ the docs
def docs_table() -> str:
    """The markdown tables of every step and calibration with their keys, and of the metrics a
    recipe's `metric:` names (docs/recipes.md holds them)."""
    def row(prefix: str, params_cls: type) -> list[str]:
        out = []
        for f in dataclasses.fields(params_cls):
            if f.name == "enabled":
                continue
            check, tune = f.metadata.get("check"), f.metadata.get("tune")
            default = "—" if f.default is dataclasses.MISSING else ("null" if f.default is None else f"{f.default:g}"
                                                                     if isinstance(f.default, float) else str(f.default))
            rng = "—" if tune is None else f"[{tune.low:g}, {tune.high:g}]" + (" log" if tune.log else "")
            out.append(f"| {prefix} | `{f.name}` | {default} | {check or 'any'} | {rng} | {f.metadata.get('help', '')} |")
        return out

    lines = ["| step (order) | key | default | allowed | tuning range | what it does |", "|---|---|---|---|---|---|"]
    for step in steps_in_order():
        lines.append(f"| **{step.name}** ({step.order}) | | | | | {step.help} |")
        lines += row("", step.Params)
    lines += ["", "| calibration | key | default | allowed | tuning range | what it does |", "|---|---|---|---|---|---|"]
    for cal in CALIBRATIONS.values():
        lines.append(f"| **{cal.name}** | | | | | {cal.help} |")
        lines += row("", cal.Params)
    lines += ["", "| metric | labels per image | intervals | what it scores |", "|---|---|---|---|"]
    for m in METRICS.values():
        lines.append(f"| **{m.name}** ({m.title}) | {m.k} | {'the marks resampled' if m.additive else 'recomputed per resample'} "
                     f"| {m.help} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m kit.post.plugins: the tables docs/recipes.md holds
    from kit.post import plugins  # the registries plug-ins register in (not this __main__'s copies)

    print(plugins.docs_table())
else:  # whoever imports the registries finds them full (each plug-in imports only the names above)
    load_plugins()
