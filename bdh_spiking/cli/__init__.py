"""Command-line entry points, one module per command (train, convert, energy, study) and
``common`` (one-line errors, argument checks, progress). No science here."""

from .common import entry_point  # noqa: F401
from .convert import convert_parser
from .convert import main as convert_main
from .energy import energy_parser
from .energy import main as energy_main
from .study import main as study_main
from .study import study_parser
from .train import main as train_main
from .train import train_parser

__all__ = ["train_main", "convert_main", "energy_main", "study_main", "train_parser", "convert_parser",
           "energy_parser", "study_parser"]
