"""verify SRC DST: per-position logits metrics, tolerances by dtype, and the CLI's verdict and exit code."""

import pytest
import torch

from ascend_nb.cli import main
from ascend_nb.convert.sources.bin_to_safetensors import convert_bin_to_safetensors
from ascend_nb.convert.original import Original
from ascend_nb.convert.verify import TOLERANCES, compare_logits, tolerance_for, verify_conversion
from ascend_nb.errors import AscendNbError
from tests.tiny_checkpoints import make_tiny_llama


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory):
    """An original GQA Llama in .bin and its safetensors conversion, plus an unrelated model."""
    root = tmp_path_factory.mktemp("verify")
    src = make_tiny_llama(root / "src", weights="bin")
    dst = convert_bin_to_safetensors(src, root / "dst", progress=False).path
    other = make_tiny_llama(root / "other", seed=1)
    return src, dst, other


def test_compare_logits_metrics():
    reference = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    candidate = torch.tensor([[2.0, 4.0, 6.0], [0.0, 1.0, 5.0]])
    table = compare_logits(reference, candidate)
    assert table.cosine[0] == pytest.approx(1.0) and table.max_abs_err[0] == pytest.approx(3.0)
    assert table.cosine[1] == pytest.approx(10 / 26) and table.mean_abs_err[1] == pytest.approx(8 / 3)
    assert table.agree.tolist() == [True, False]


def test_tolerance_is_the_least_precise_dtype():
    assert tolerance_for(torch.float32, torch.bfloat16, torch.float64) == TOLERANCES[torch.bfloat16]
    assert tolerance_for(torch.float64) == TOLERANCES[torch.float64]


def test_gqa_llama_reference_agrees_with_transformers(llama_pair):
    src, dst, _ = llama_pair
    report = verify_conversion(src, dst, prompts=("Hello 世界", [1, 5, 9, 200, 300]))
    assert report.passed and report.max_abs_err < 1e-4 and report.greedy_agreement == 1.0
    assert report.table.prompt.tolist().count(1) == 5 and report.family == "llama"


def test_cli_verify_exit_codes(llama_pair, capsys):
    src, dst, other = llama_pair
    assert main(["convert", "verify", str(src), str(dst), "--prompt", "The capital of France"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["convert", "verify", str(src), str(other)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "cosine" in out
    with pytest.raises(AscendNbError, match="does not compute what the original does"):
        verify_conversion(src, other)


@pytest.mark.parametrize("edit, message", [({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
                                           ({"hidden_act": "gelu"}, "SiLU")])
def test_reference_refuses_what_it_does_not_implement(edit, message):
    config = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10, **edit}
    with pytest.raises(AscendNbError, match=message):
        Original.from_config(config, "llama")
