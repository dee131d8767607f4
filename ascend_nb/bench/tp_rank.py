"""One rank of a tensor-parallel benchmark, launched by :func:`~ascend_nb.bench.distributed.bench_tensor_parallel`.

``python -m torch.distributed.run --nproc-per-node N -m ascend_nb.bench.tp_rank '<BenchConfig as JSON>'``:
every rank loads its shard of the config's engines and runs the interleaved rounds (the collectives
need them all); rank 0 prints the rows as one JSON line. A user error prints one line that starts
with :data:`ERROR_PREFIX` on stderr and exits 2.
"""

from __future__ import annotations

import json
import sys

from ascend_nb.bench.run import BenchConfig, run_bench_rank
from ascend_nb.errors import AscendNbError

ERROR_PREFIX = "tensor-parallel bench: error: "


def main(argv: list[str]) -> int:
    """Run the :meth:`BenchConfig.to_json` config in ``argv[0]`` on this rank; the exit code."""
    try:
        rows = run_bench_rank(BenchConfig.from_json(argv[0]))
    except AscendNbError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    if rows is not None:
        print(json.dumps(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
