"""Files: ascend-nb's cache root, its data folder, and atomic writes (a reader sees the old content or the new,
never half of it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ascend_nb.errors import AscendNbError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # the repository's data/, beside the package


def cache_home() -> Path:
    """ascend-nb's cache root: ``$ASCEND_NB_HOME``, default ``~/.cache/ascend_nb``; one line when it cannot be used."""
    path = configured_cache_home()
    problem = cache_home_problem(path)
    if problem:
        raise AscendNbError(problem)
    return path


def cache_home_problem(path: Path | None = None) -> str | None:
    """Why the cache root (default: the configured one) cannot hold models and kernels, or None when it can.

    It need not exist yet; the nearest existing folder on its path must then be a writable folder."""
    path = configured_cache_home() if path is None else path
    existing = next((p for p in (path, *path.parents) if p.exists()), path.anchor)
    where = f"the cache folder {path} (ASCEND_NB_HOME)"
    if not Path(existing).is_dir():
        return (f"{where} cannot be used: {existing} is not a folder; point ASCEND_NB_HOME at a folder "
                "(export ASCEND_NB_HOME=~/.cache/ascend_nb) or move that file away")
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"{where} cannot be used: {existing} is not writable; point ASCEND_NB_HOME at a folder "
                "you can write to")
    return None


def configured_cache_home() -> Path:
    """The cache root as configured, whether usable or not (see :func:`cache_home`)."""
    return Path(os.environ.get("ASCEND_NB_HOME") or "~/.cache/ascend_nb").expanduser()


def data_dir() -> Path:
    """The ``data/`` folder (published tables, device specs, error signatures, C-Eval sample):
    ``$ASCEND_NB_DATA`` if set, else :data:`DATA_DIR`."""
    path = Path(os.environ.get("ASCEND_NB_DATA") or DATA_DIR)
    if not path.is_dir():
        raise AscendNbError(f"data folder {path} is missing: set ASCEND_NB_DATA to the repository's data/ folder")
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    An existing file keeps its permissions; a new one gets 0644.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_config_json(directory: str | Path, fix: str) -> dict:
    """``config.json`` of a model directory as a dict; each usual breakage is a one-line
    :class:`AscendNbError` (``fix`` says what to do about a corrupt file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AscendNbError(f"{directory} is not a directory: point at the folder holding config.json and the weights")
    path = directory / "config.json"
    if not path.is_file():
        raise AscendNbError(f"{directory} has no config.json: is it a model directory?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AscendNbError(f"{path} is corrupt ({exc}): {fix}") from exc
    if not isinstance(config, dict):
        raise AscendNbError(f"{path} is corrupt (not a JSON object): {fix}")
    return config
