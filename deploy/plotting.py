"""The one way lightnets gets matplotlib: headless (Agg) and quiet.

Every PNG the project writes (training curves, confusion matrices, benchmark plots) draws with the
``pyplot`` returned here, so no module has to remember the backend, and matplotlib's one-off
"generated new fontManager" notice on a fresh machine does not reach the console.
"""

from __future__ import annotations

import logging


def pyplot():
    """Returns ``matplotlib.pyplot`` on the Agg backend, with matplotlib's INFO logs silenced."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
