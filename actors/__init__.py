"""The platform's actors: the seed's example tasks (:mod:`actors.examples`), the escrow
jobs (:mod:`actors.escrow`) and the case-management jobs (:mod:`actors.casemgmt`).

``dramatiq actors`` keeps working as the worker command: importing this package imports
the composition root (:mod:`jobplatform`), which builds the broker and then declares
every actor. This is the one import from a lower package up to the root, and it exists
only for that entry point (the layer contract in ``pyproject.toml`` names it).
"""

import jobplatform  # noqa: F401
