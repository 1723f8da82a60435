"""``python -m upstream.pretrain``: see :mod:`upstream.pretrain`."""
import sys

from .cli import main

sys.exit(main())
