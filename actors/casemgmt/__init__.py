"""Case-management jobs (seed 000): the email sync family, email matching and the scheduled agency jobs.

Domain functions (take a SQLAlchemy session) live in one module per job family; the
actors in :mod:`actors.casemgmt.jobs` are thin wrappers that open the tenant session.
"""

from actors.casemgmt import jobs

__all__ = ["jobs"]
