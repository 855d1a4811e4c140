"""``python -m pygpu_ops``: the ``pygpu-ops`` command."""
import sys

from .cli import main

sys.exit(main())
