"""Training one ensemble member: recipes, WhaleNet (timm backbone + identity head), losses, the loop.

    from kit.train import load_recipe, train
    train(load_recipe("models/resnet18_tiny.yaml"))        # -> models/resnet18_tiny/

Export and inference use `kit.train.model.load_member` and `kit.train.data.load_image`. Importing
this package is light: the names below load their module (and torch, timm) on first use, so
`kit.train.recipe` (recipes, the out-of-fold layout) reads without torch.
"""
import importlib

_HOME = {"train": "kit.train.loop", "train_every_fold": "kit.train.loop", "MemberInfo": "kit.train.model",
         "WhaleNet": "kit.train.model", "load_member": "kit.train.model", "Recipe": "kit.train.recipe",
         "load_recipe": "kit.train.recipe"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'kit.train' has no attribute {name!r}")
