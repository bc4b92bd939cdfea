"""Imports every module that registers architectures. Adding one is one line here."""

from centernet.models import resnet  # noqa: F401
from centernet.models import dla  # noqa: F401
from centernet.models import hourglass  # noqa: F401
