"""``python -m nonequil ...``: the same as the ``nonequil`` command (``nonequil.cli.main``)."""
import sys

from .cli import main

sys.exit(main())
