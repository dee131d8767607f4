"""ascend_nb.dtypes: the one place dtype names are parsed, printed and sized."""

import pytest
import torch

from ascend_nb.dtypes import CHOICES, bytes_per_element, dtype_name, parse_dtype
from ascend_nb.errors import AscendNbError


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("half", torch.float16), ("torch.float32", torch.float32),
                                         (torch.float16, torch.float16)])
def test_names_parse_to_torch_dtypes(name, dtype):
    assert parse_dtype(name) is dtype


def test_canonical_names_and_sizes():
    assert [dtype_name(n) for n in ("fp32", "fp16", "bf16")] == list(CHOICES[1:])
    assert [bytes_per_element(n) for n in CHOICES[1:]] == [4, 2, 2]
    assert dtype_name(torch.int8) == "int8" and dtype_name(None) == "None"


def test_one_error_for_an_unknown_name():
    with pytest.raises(AscendNbError, match=r"unknown dtype 'float8': use auto, float32, float16 or bfloat16"):
        parse_dtype("float8")
    with pytest.raises(AscendNbError, match="unknown dtype"):
        parse_dtype("float64")
    assert parse_dtype("float64", float64=True) is torch.float64
