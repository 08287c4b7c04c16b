"""``python -m data_tools.build.synth``."""

from data_tools.build.synth.cli import main
from data_tools.cli import exit_with

exit_with(main)
