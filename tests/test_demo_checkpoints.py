"""Random checkpoints in the original formats: written a shard at a time they hold the very tensors the
one-file version holds (what lets scripts/bench_7b.py write a 7B checkpoint without holding it)."""

from __future__ import annotations

import torch

from ascend_nb.convert.demo_checkpoints import make_tiny_aquila, make_tiny_baichuan2
from ascend_nb.models.checkpoint import Checkpoint


def test_streamed_shards_hold_the_same_tensors(tmp_path):
    for make in (make_tiny_baichuan2, make_tiny_aquila):
        whole = Checkpoint(make(tmp_path / f"{make.__name__}-whole", shards=1))
        streamed = Checkpoint(make(tmp_path / f"{make.__name__}-streamed", shard_bytes=40_000))
        assert len(streamed.files) > 3 and streamed.names() == whole.names()
        for name in whole.names():
            assert torch.equal(whole.get(name), streamed.get(name)), name
        sized = Checkpoint(make(tmp_path / f"{make.__name__}-sized", shard_bytes=40_000, vocab_size=1024))
        assert sized.shape("model.embed_tokens.weight") == (1024, 64) == sized.shape("lm_head.weight")
