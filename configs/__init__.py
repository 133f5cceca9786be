"""Training recipes: Python files whose ``get_config()`` returns an ``ml_collections.ConfigDict``."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
