"""The post-processor tests' fabricators under their old names; they live in kit/testing.py."""
from kit.testing import FakeCompetition, UNKNOWN, noisy_scores  # noqa: F401
from kit.testing import make_label_competition as make_competition  # noqa: F401
from kit.testing import write_blend_recipe as write_recipe  # noqa: F401
from kit.testing import write_predictions as write_member  # noqa: F401
