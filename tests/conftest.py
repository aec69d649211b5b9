# ===================================================================================
# Hub test environment (LocalHub).  Keep this section at the top of conftest.py.
#
# This runs when pytest imports conftest.py, i.e. BEFORE any test module imports
# huggingface_hub / transformers / timm, which read HF_ENDPOINT and the cache paths at
# import time.  Every Hub call of the test session (and of subprocesses started by tests,
# which inherit os.environ) goes to a LocalHub on 127.0.0.1 and caches into a temp dir.
# ===================================================================================
import atexit
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # make `tests/hub_server.py` importable as `hub_server`
from hub_server import LocalHub  # noqa: E402

_HUB = LocalHub().start()
_HF_HOME = tempfile.mkdtemp(prefix="hf_gazecons_hf_home_")

os.environ.update(
    {
        "HF_ENDPOINT": _HUB.url,
        "HF_HOME": _HF_HOME,
        "HF_HUB_CACHE": os.path.join(_HF_HOME, "hub"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
)
for _var in ("NO_PROXY", "no_proxy"):  # never send 127.0.0.1 through a proxy
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))
for _var in (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_CACHE",
    "HF_HUB_ETAG_TIMEOUT",
    "HF_STORED_TOKENS_PATH",
):
    os.environ.pop(_var, None)
if "huggingface_hub" in sys.modules:  # imported too early (e.g. by a plugin): it would talk to the real Hub
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")


def _shutdown_hub() -> None:
    _HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)


atexit.register(_shutdown_hub)  # also covers sessions that never request the fixture


@pytest.fixture(scope="session")
def local_hub_session() -> LocalHub:
    """The one LocalHub of the test session (HF_ENDPOINT points at it)."""
    return _HUB


@pytest.fixture
def local_hub(local_hub_session: LocalHub):
    """The session's LocalHub, with a clean request log; injected failures and the token
    requirement are removed after the test.  Repos persist: use unique repo names."""
    local_hub_session.reset()
    yield local_hub_session
    local_hub_session.reset()


def pytest_sessionfinish(session, exitstatus):
    _HUB.stop()


# ===================================================================================
# End of the Hub section.  Other fixtures go below.
# ===================================================================================


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory):
    """hf-gazecons caches its ``train --help`` under XDG_CACHE_HOME: never the user's during tests."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run tiny CPU forwards, for which extra OpenMP threads only add contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
