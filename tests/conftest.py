"""Shared fixtures: an offline, isolated environment and the tiny models, built once per run.

No test touches the network or the user's caches: ``HF_HUB_OFFLINE`` is set and every cache
points into a temporary folder *before* any Hugging Face library is imported. Tiny models are
built lazily, one role at a time, the first time a test asks for them.

Set ``FAIRYTALE_TINY_MODELS=DIR`` to reuse models written by ``python -m tests.tiny_models DIR``
(handy while iterating locally; CI always builds fresh ones).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.netguard import sitecustomize as netguard

_HOME = Path(tempfile.mkdtemp(prefix="fairytale-tests-"))
_NETGUARD_LOG = _HOME / "netguard.log"
os.environ.update(
    {
        # The no-outside-network guard, here and in every Python subprocess (see tests/netguard).
        "FAIRYTALE_NETGUARD_LOG": str(_NETGUARD_LOG),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent / "netguard"), os.environ.get("PYTHONPATH")])
        ),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(_HOME / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "FLAIR_CACHE_ROOT": str(_HOME / "flair"),
        "TOKENIZERS_PARALLELISM": "false",
        "MPLCONFIGDIR": str(_HOME / "mpl"),
        # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine thread
        # hand-offs make a tiny forward pass 30x slower. Benchmarks run outside pytest.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
)

import pytest  # noqa: E402

netguard.install()

DATA = Path(__file__).parent / "data"
STORIES = DATA / "stories"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_outside_network():
    """Fail any test that tried to connect outside this machine, in-process or in a subprocess,
    even when the code under test swallowed the guard's exception."""
    before = _NETGUARD_LOG.read_text(encoding="utf-8") if _NETGUARD_LOG.exists() else ""
    yield
    after = _NETGUARD_LOG.read_text(encoding="utf-8") if _NETGUARD_LOG.exists() else ""
    if after != before:
        attempts = after[len(before) :].strip().replace("\n", "; ")
        pytest.fail(f"connection attempts outside loopback: {attempts}", pytrace=False)


class TinyModels:
    """Builds each tiny model role on first use, into one folder per test run."""

    def __init__(self, root: Path, prebuilt: Path | None) -> None:
        self.root = root
        self.prebuilt = prebuilt

    def __call__(self, role: str) -> Path:
        if self.prebuilt and (self.prebuilt / role).is_dir():
            return self.prebuilt / role
        target = self.root / role
        if not target.is_dir():
            from tests.tiny_models import build

            build(self.root, [role])
        return target


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    prebuilt = os.environ.get("FAIRYTALE_TINY_MODELS")
    return TinyModels(tmp_path_factory.mktemp("tiny-models"), Path(prebuilt) if prebuilt else None)


def _role_fixture(role: str):
    @pytest.fixture(scope="session")
    def fixture(tiny_models: TinyModels) -> Path:
        return tiny_models(role)

    fixture.__doc__ = f"Path of the tiny '{role}' model (built once per run)."
    return fixture


tiny_ner = _role_fixture("ner")
tiny_qa = _role_fixture("qa")
tiny_nli = _role_fixture("nli")
tiny_sd = _role_fixture("sd")
tiny_sd2 = _role_fixture("sd2")
tiny_variations = _role_fixture("variations")
tiny_unclip = _role_fixture("unclip")
tiny_upscaler = _role_fixture("upscaler")
tiny_safety_checker = _role_fixture("safety_checker")
tiny_clip = _role_fixture("clip")
tiny_ip_adapter = _role_fixture("ip_adapter")


@pytest.fixture()
def story_path() -> Path:
    """A short test story with a named giraffe, an unnamed owl and a monkey."""
    return STORIES / "ginger_giraffe.txt"


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder nobody can create files in: a chmod-ed one, or /proc for root (who ignores modes)."""
    if os.geteuid() == 0:
        yield Path("/proc")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    yield locked
    locked.chmod(0o700)


@pytest.fixture()
def clock():
    """The scraper's clock and sleep, faked: pauses are recorded, never waited."""
    from tests.scraping_site import FakeClock

    return FakeClock()


@pytest.fixture()
def site():
    """A Monkey Pen-like site served on 127.0.0.1 for the scraper's tests."""
    from tests.scraping_site import Site, serve

    with serve(Site()) as running:
        yield running


@pytest.fixture()
def gradio(tmp_path, monkeypatch):
    """gradio, imported as the studio imports it (its temporary files under ``tmp_path``)."""
    from tests.studio_support import require_gradio

    require_gradio()
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "")  # put back after the test
    from fairytale.studio_app import _import_gradio

    return _import_gradio(tmp_path / ".studio")


@pytest.fixture()
def session(tmp_path, tiny_sd):
    """A studio session on the tiny model, with one planned book, ``zoe``, of two pages."""
    from fairytale.studio_actions import StudioOptions
    from fairytale.studio_app import StudioSession
    from tests.render_support import make_plan, tiny_settings, write_plan

    folder = tmp_path / "zoe"
    folder.mkdir()
    write_plan(folder, make_plan(2))
    return StudioSession(StudioOptions(tiny_settings(tiny_sd)), tmp_path)
