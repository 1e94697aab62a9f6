"""``python -m fastapi_tenancy.postgres DATABASE_URL``: the checker, as a module."""

from __future__ import annotations

import sys

from .check import main

if __name__ == "__main__":
    sys.exit(main())
