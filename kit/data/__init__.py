"""The competition data layer: layouts, the synthetic generator, local-validation folds."""
from kit.data.competition import Competition, load_competition

__all__ = ["Competition", "load_competition"]
