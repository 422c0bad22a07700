"""``python -m benchmarks.gpu_check``: see :mod:`benchmarks.gpu_check`."""

import sys

from .command import main

sys.exit(main())
