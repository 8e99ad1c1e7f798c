"""Helpers for the tests of many processes and many books: running the CLI in a subprocess
(as `accelerate launch` or a Ray driver would), and comparing books."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fairytale.files import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this tree importable, no GPU, one thread per
    process (pictures are compared bit for bit, and the float results of a CPU kernel may
    depend on its thread count), and reportlab's invariant mode (no creation date or random
    document id in the PDF, so two PDFs of the same book are the same bytes)."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        RL_invariant="1",
        COLUMNS="200",
        **extra,
    )


def run_cli(*args: object, launcher: list[str] | None = None, timeout: float = 600, **env: str):
    """``python -m fairytale ARGS`` (or under ``launcher``, e.g. accelerate launch), captured."""
    command = [*(launcher or [sys.executable]), "-m", "fairytale", *map(str, args)]
    return subprocess.run(
        command, env=cli_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def accelerate_launch(processes: int) -> list[str]:
    """`accelerate launch` with ``processes`` processes on the CPU: the flags the trainer's
    multi-process test uses (accelerate starts several processes without GPUs only with
    --multi_gpu; they then meet over gloo)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip


def page_pictures(book_dir: Path) -> dict[str, str]:
    """Each page picture of a book folder by name, as a hash of its bytes."""
    return {path.name: sha256_file(path) for path in sorted((Path(book_dir) / "pages").glob("page-*.png"))}


def cache_times(book_dir: Path) -> dict[str, int]:
    """When each cached picture was written (a repaint rewrites it)."""
    return {path.name: path.stat().st_mtime_ns for path in sorted((Path(book_dir) / "cache").glob("*.png"))}


def book_contents(pdf: Path) -> tuple[list[str], list[list[str]]]:
    """What a reader sees in a PDF: each page's text, and a hash of the pixels of each picture
    placed on it (independent of where the file was written)."""
    import hashlib

    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(pdf))
    try:
        texts, pictures = [], []
        for page in document:
            texts.append(page.get_textpage().get_text_range())
            pictures.append(
                [
                    hashlib.sha256(obj.get_bitmap().to_pil().tobytes()).hexdigest()
                    for obj in page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE])
                ]
            )
        return texts, pictures
    finally:
        document.close()


#: A loopback port nothing listens on (the discard port).
CLOSED_LOOPBACK_PROXY = "http://127.0.0.1:9"


@contextlib.contextmanager
def local_ray(num_cpus: int) -> Iterator[str]:
    """A Ray instance on this machine only, for the tests and the benchmark; yields its address.

    * ``_node_ip_address="127.0.0.1"`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray binds
      loopback (since Ray 2.4x, "127.0.0.1" alone is turned into the host's routable address
      unless Ray is told this is no cluster);
    * no dashboard, ``RAY_USAGE_STATS_ENABLED=0``: no usage reports;
    * a proxy on a closed loopback port for Ray's own processes: Ray >= 2.45 asks the cloud
      metadata address (169.254.169.254) which cloud it runs on at start, even with usage stats
      off; through the proxy that question never leaves the machine (the tests' network guard
      sees no outside connection);
    * ``RAY_AUTH_MODE=disabled``: no token written to the home folder for a loopback-only instance.

    Ray's processes inherit this environment (and the tests' PYTHONPATH, with its network
    guard), and drivers started from here (the CLI in a subprocess) connect with it too.
    """
    import ray

    env = cli_env(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        http_proxy=CLOSED_LOOPBACK_PROXY,
        https_proxy=CLOSED_LOOPBACK_PROXY,
        no_proxy="",
    )
    before = dict(os.environ)
    os.environ.update(env)
    try:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=0,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            # Ray names its GCS by this machine's routable address, but listens on every interface:
            # the loopback form keeps a driver's own connections (the library's reachability check
            # included) on 127.0.0.1, where the tests' network guard lets them through.
            port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
            yield f"127.0.0.1:{port}"
        finally:
            ray.shutdown()
    finally:
        os.environ.clear()
        os.environ.update(before)
