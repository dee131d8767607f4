"""Start a local OpenAI-compatible server (``transformers serve``) for a model directory.

For comparing local engines with a served one on the same machine, and for tests. Production
serving belongs to vLLM / vllm-ascend / MindIE; the ``openai`` backend talks to any of them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ascend_nb.errors import AscendNbError


@dataclass(frozen=True)
class LocalServer:
    """A running server: its ``/v1`` base URL and the model name it serves."""

    base_url: str
    model: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def transformers_server(model_dir: str | Path, port: int | None = None, startup_timeout: float = 180.0
                        ) -> Iterator[LocalServer]:
    """Run ``transformers serve MODEL_DIR`` on 127.0.0.1 until the block ends.

    Needs ``pip install 'transformers[serving]'``. The model name to send is the directory path.
    """
    port = port or free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    try:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except FileNotFoundError as exc:
        raise AscendNbError("`transformers serve` is not installed: pip install 'transformers[serving]'") from exc
    try:
        deadline = time.monotonic() + startup_timeout
        while server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AscendNbError(f"transformers serve did not come up within {startup_timeout:g} s")
            time.sleep(0.5)
        if server.poll() is not None:
            raise AscendNbError(f"transformers serve exited with code {server.returncode}: run it by hand to see why")
        yield LocalServer(base_url=f"http://127.0.0.1:{port}/v1", model=str(model_dir))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
