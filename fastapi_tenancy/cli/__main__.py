"""``python -m fastapi_tenancy.cli``: the ``fastapi-tenancy`` command."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
