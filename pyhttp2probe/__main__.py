"""`python -m pyhttp2probe`."""

import sys

from .cli import main

sys.exit(main())
