"""Atomic output directories with a sha256 manifest, and a disk-space check before writing.

A conversion killed by a signal leaves nothing behind (or, after kill -9, nothing the next run into
the same destination does not remove first); two conversions into one destination cannot race.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ascend_nb.errors import AscendNbError

MANIFEST = "checksums.sha256"  # `sha256sum -c checksums.sha256` format


def check_free_space(directory: Path, needed_bytes: int) -> None:
    """Raise a clear error when ``directory``'s file system has less than ``needed_bytes`` free."""
    directory = Path(directory)
    probe = directory if directory.exists() else next(p for p in directory.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise AscendNbError(f"not enough disk space in {probe}: need {needed_bytes / 2**30:.2f} GiB, "
                            f"{free / 2**30:.2f} GiB free; free some space or choose another destination")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> Path:
    """Write ``checksums.sha256`` listing every file under ``directory``."""
    directory = Path(directory)
    lines = [f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}"
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST]
    target = directory / MANIFEST
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_manifest(directory: Path, digest_of: Callable[[Path], str] = sha256_file) -> list[str]:
    """Names of files whose checksum no longer matches the manifest (missing files included).

    ``digest_of`` computes a file's sha256 (a cache may answer for files that did not change)."""
    directory = Path(directory)
    bad = []
    for line in (directory / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = directory / name
        if not path.is_file() or digest_of(path) != digest:
            bad.append(name)
    return bad


@contextmanager
def atomic_directory(dst: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``dst``; on success write the manifest and rename it to ``dst``.

    On any failure, Ctrl-C, SIGTERM or SIGHUP the temporary directory is removed, so ``dst`` is either
    absent, the old version, or complete. An existing ``dst`` is only replaced with ``force=True``.
    A lock beside ``dst`` keeps a second conversion into the same ``dst`` out while one runs; under it
    the temporary directories a killed run (kill -9) left are removed first, and an old ``dst`` that
    a run killed mid-swap had moved aside is put back.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _destination_lock(dst), _signals_raise():
        _remove_stale(dst)
        if dst.exists() and not force:
            raise AscendNbError(f"{dst} already exists: pass --force to overwrite it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
        tmp.chmod(0o755)
        try:
            yield tmp
            write_manifest(tmp)
            with _signals_held():  # never stop between the two renames
                if dst.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
                    os.replace(dst, old / dst.name)
                    os.replace(tmp, dst)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Make SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` in the block, as Ctrl-C raises
    KeyboardInterrupt, so cleanup runs. Only where they still have their default action (Python's
    for SIGINT), and only on the main thread (Python delivers signals there). A signal that surfaces
    as another error (raised inside a C extension's import, say) is re-raised as itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    caught: list[int] = []

    def leave(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    previous = {sig: signal.getsignal(sig) for sig in defaults}
    replaced = [sig for sig, handler in previous.items() if handler is defaults[sig]]
    for sig in replaced:
        signal.signal(sig, leave)
    try:
        yield
    except Exception as exc:
        if caught:
            raise (KeyboardInterrupt() if caught[0] == signal.SIGINT else SystemExit(128 + caught[0])) from exc
        raise
    finally:
        for sig in replaced:
            signal.signal(sig, previous[sig])


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP in the block (delivered when it ends)."""
    held = {signal.SIGINT, *CAUGHT_SIGNALS}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def file_lock(path: Path, busy: str | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, removed when the block ends.

    With ``busy`` (a one-line message) the lock is refused at once while another process holds it;
    without, the caller waits for it. The file is only removed by its holder, so a waiter that wakes
    up holding a file another holder just removed takes the lock again on the file now on disk.
    """
    path = Path(path)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            handle.close()
            raise AscendNbError(busy) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # still the file on disk (not one a finishing holder just removed)
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def _destination_lock(dst: Path) -> AbstractContextManager[None]:
    """The lock on ``.{dst.name}.lock`` beside ``dst``: refused at once (one line) while another process holds it."""
    path = dst.parent / f".{dst.name}.lock"
    return file_lock(path, busy=f"another conversion is writing {dst} right now (it holds {path}): "
                                "wait for it to finish, or choose another destination")


def _remove_stale(dst: Path) -> None:
    """Under the lock: remove what killed runs into ``dst`` left, restoring a ``dst`` moved aside mid-swap."""
    for leftover in sorted(dst.parent.glob(f".{dst.name}.old-*")):
        if not dst.exists() and (leftover / dst.name).is_dir():
            os.replace(leftover / dst.name, dst)
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in dst.parent.glob(f".{dst.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
