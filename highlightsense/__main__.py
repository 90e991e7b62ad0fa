"""``python -m highlightsense …`` is the command line (and ``torchrun -m highlightsense train``)."""

import sys

from .cli import main

sys.exit(main())
