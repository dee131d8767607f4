"""Check a model directory against the ``checksums.sha256`` beside its weights.

The default check (``verify=True``) is fast, not a guarantee: every load looks at each listed file's
size and modification time (cheap), and a file is hashed in full only when they changed since it was
last hashed, so a byte changed under a restored mtime goes unseen. ``verify="full"`` hashes every file
now (``ascend-nb fetch --verify``, ``--verify full``). The digests are remembered by path, size and
mtime in ``$ASCEND_NB_HOME/verified-checksums.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

from ascend_nb.atomic import MANIFEST, sha256_file, verify_manifest
from ascend_nb.errors import AscendNbError
from ascend_nb.files import atomic_write_text, cache_home

CACHE_FILE = "verified-checksums.json"
ANNOUNCE_BYTES = 1 << 30
SKIP_HINT = "load with verify=False (--no-verify) to skip this check"
Verify = bool | Literal["full"]  # True: the fast check, "full": hash every file, False: skip


class DigestCache:
    """sha256 of files by (resolved path, size, mtime_ns); reads and writes one small JSON file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):  # absent or damaged: start again (it only saves time)
            entries = {}
        self._entries: dict[str, list] = entries if isinstance(entries, dict) else {}
        self._changed = False

    def digest(self, path: Path) -> str:
        """The sha256 of ``path``: the remembered one while its size and mtime are unchanged, else hashed."""
        stat = path.stat()
        entry = self._entries.get(str(path.resolve()))
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            return entry[2]
        return self.rehash(path, "once per file change")

    def rehash(self, path: Path, why: str = "verify='full' hashes every file") -> str:
        """The sha256 of ``path`` hashed now, whatever is remembered; remembered for the next check."""
        stat = path.stat()
        if stat.st_size >= ANNOUNCE_BYTES:  # minutes for a 7B shard set: say what is going on
            print(f"ascend-nb: checking {path} against {MANIFEST} ({stat.st_size / 2**30:.1f} GiB; {why})",
                  file=sys.stderr)
        digest = sha256_file(path)
        self._entries[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns, digest]
        self._changed = True
        return digest

    def save(self) -> None:
        """Write the cache back if it changed, forgetting files that no longer exist."""
        if self._changed:
            kept = {key: entry for key, entry in self._entries.items() if os.path.exists(key)}
            atomic_write_text(self.path, json.dumps(kept))


def check_verify(verify: object) -> Verify:
    """``verify`` itself when it is True, False or "full"; anything else is refused in one line."""
    if isinstance(verify, bool) or verify == "full":
        return verify
    raise AscendNbError(f"verify must be True (the fast check, keyed on each file's size and modification time), "
                        f"'full' (hash every file now) or False (skip the check), got {verify!r}")


def check_manifest(model_dir: Path, verify: Verify = True) -> None:
    """Raise a one-line :class:`AscendNbError` when a file listed in the manifest is missing or changed.

    ``verify``: True trusts the digests remembered while a file's size and mtime are unchanged (see
    the module docstring), "full" hashes every file now (and remembers the digests), False skips the
    check. A directory without a manifest passes (nothing to check against)."""
    model_dir = Path(model_dir)
    if not check_verify(verify) or not (model_dir / MANIFEST).is_file():
        return
    cache = DigestCache(cache_home() / CACHE_FILE)
    try:
        bad = verify_manifest(model_dir, cache.rehash if verify == "full" else cache.digest)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AscendNbError(f"{model_dir / MANIFEST} is corrupt ({exc}): re-convert the model, or {SKIP_HINT}") from exc
    finally:
        cache.save()
    if bad:
        path = model_dir / bad[0]
        more = f" (and {len(bad) - 1} more file{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        state = f"does not match its sha256 in {MANIFEST}" if path.is_file() else f"is missing (listed in {MANIFEST})"
        raise AscendNbError(f"{path}{more} {state}: the download or conversion is damaged; re-download or "
                            f"re-convert the model (if you changed the file on purpose, {SKIP_HINT})")
