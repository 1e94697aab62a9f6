"""Distributing an app's tables on Citus, as docs/citus.md shows it.

``tests/docs/test_citus_docs.py`` runs the check on the example app's tables; distributing
needs a Citus coordinator (``tests/postgres/test_citus.py``, marked ``citus``).
"""

from __future__ import annotations

from sqlalchemy import Engine, MetaData

from fastapi_tenancy.postgres.citus import distribute, distribution_problems


# --8<-- [start:distribute]
def distribute_at_start(engine: Engine, metadata: MetaData) -> list[str]:
    """Create the tables and distribute them on a Citus coordinator (as the tables' owner)."""
    problems = distribution_problems(metadata)  # from the models alone: no database needed
    if problems:
        raise SystemExit("\n".join(str(problem) for problem in problems))
    metadata.create_all(engine)
    return distribute(engine, metadata)  # the statements it ran; [] when already done


# --8<-- [end:distribute]
