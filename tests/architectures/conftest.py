import urllib.error

import pytest
from tf_keras.src.utils import data_utils


@pytest.fixture
def offline_keras_cache(tmp_path, monkeypatch):
    """An empty Keras home in ``tmp_path`` and no network: every download fails at once."""

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"network disabled by the test ({url})")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(data_utils, "urlretrieve", no_network)
    return tmp_path / "keras_home" / "models"
