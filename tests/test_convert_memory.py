"""The converters' peak memory, measured in a fresh process: one source ``.bin`` shard plus about one tensor,
not the checkpoint.

A checkpoint of several tens of MB in shards of ~24 MB is converted after a warm-up conversion (so imports and
first-use allocations are done) and a reset of ``VmHWM`` (``/proc/self/clear_refs``); the growth of the peak
resident set, which counts the pages of memory-mapped shards that were read, must stay near one shard. Before
the converters released each shard, every mapped shard was counted until the end (15-19 GB at 7B).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHARD_BYTES = 24 * 10**6
SIZES = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "intermediate_size": 1408, "vocab_size": 8192}

CHILD = """
import json, sys
from pathlib import Path
import torch
from ascend_nb.convert import demo_checkpoints
from ascend_nb.convert.sources import converter

def status(key):
    return int(dict(line.split(":", 1) for line in open("/proc/self/status"))[key].split()[0]) * 1024

work, kind, sizes, shard_bytes = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
make = {"baichuan2": demo_checkpoints.make_tiny_baichuan2, "aquila": demo_checkpoints.make_tiny_aquila,
        "safetensors": demo_checkpoints.make_tiny_aquila}[kind]
options = {"progress": False, "verify": kind == "safetensors"}  # the others' check is a full logits comparison
converter(kind)(make(work / "warm-src"), work / "warm-out", **options)  # imports and first-use allocations
source = make(work / "src", shard_bytes=shard_bytes, **sizes)
files = sorted(source.glob("*.bin"))
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = status("VmRSS")
converter(kind)(source, work / "out", **options)
print(json.dumps({"growth": status("VmHWM") - before, "files": len(files),
                  "total": sum(f.stat().st_size for f in files), "shard": max(f.stat().st_size for f in files)}))
"""


def _clear_refs_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").is_file() or not _clear_refs_works(),
                    reason="needs Linux /proc (VmHWM and its reset)")
@pytest.mark.parametrize("kind", ["baichuan2", "safetensors"])
def test_conversion_peaks_at_about_one_shard(kind, tmp_path):
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), kind, json.dumps(SIZES), str(SHARD_BYTES)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["files"] >= 4, measured
    # one mapped shard + one tensor produced (the normalized head, a cast) + slack; all shards would be >= total
    limit = measured["shard"] + 2 * 16 * 10**6 + 16 * 10**6
    assert measured["growth"] < limit < measured["total"], measured


def _mappings(path: Path) -> int:
    return sum(line.rstrip().endswith(str(path)) for line in open("/proc/self/maps"))


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_source_shards_keep_one_bin_shard_mapped(tmp_path):
    import gc

    from ascend_nb.convert.demo_checkpoints import make_tiny_aquila
    from ascend_nb.convert.shards import SourceShards
    from ascend_nb.models.checkpoint import Checkpoint

    checkpoint = Checkpoint(make_tiny_aquila(tmp_path / "src", shards=3))  # maps every shard itself (pages untouched)
    source = SourceShards(checkpoint)
    names = checkpoint.names()
    first, last = source.file_of(names[0]).resolve(), source.file_of(names[-1]).resolve()
    before = {path: _mappings(path) for path in (first, last)}
    tensor = source.get(names[0])
    assert _mappings(first) == before[first] + 1 and source.loads == 1
    source.get(names[1])  # same shard: no new mapping
    assert source.loads == 1
    source.get(names[-1])  # another shard: the first is dropped, but a tensor still held keeps its pages
    assert _mappings(last) == before[last] + 1 and _mappings(first) == before[first] + 1
    del tensor
    gc.collect()
    assert _mappings(first) == before[first]
    source.release()
    gc.collect()
    assert _mappings(last) == before[last] and source.loads == 2
