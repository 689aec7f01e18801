"""``python -m codereason_jax.convert_pangu``: the command line of the package."""

import sys

from codereason_jax.convert_pangu import main

sys.exit(main())
