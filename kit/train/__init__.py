"""Training one ensemble member: recipes, WhaleNet (timm backbone + identity head), losses, the loop.

    from kit.train import load_recipe, train
    train(load_recipe("models/resnet18_tiny.yaml"))        # -> models/resnet18_tiny/

Export and inference use `kit.train.model.load_member` and `kit.train.data.load_image`; importing
this package imports torch and timm (post-processing never does).
"""
from kit.train.loop import train
from kit.train.model import MemberInfo, WhaleNet, load_member
from kit.train.recipe import Recipe, load_recipe

__all__ = ["MemberInfo", "Recipe", "WhaleNet", "load_member", "load_recipe", "train"]
