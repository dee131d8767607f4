"""The real torch_npu wheel is the oracle of every NPU call we make and of the fake that stands in for it.

``torch-npu==2.12.0`` is fetched once with ``pip download --no-deps`` into the cache (:mod:`ascend_nb.wheels`;
never installed, never imported) and three of its files are read straight from the zip:

- ``torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml``: each op's registered schema, the one the
  dispatcher enforces (argument names, order, keyword-only marker, types, defaults);
- ``torch_npu/_op_plugin_docs.py``: the documented schema and semantics (mask convention, formulas, dtypes);
- ``torch_npu/op_plugin/meta/_meta_registrations.py``: Huawei's meta functions, executed here on meta tensors
  (their imports and registration decorators replaced by stand-ins) to give each call's output shapes and dtypes.

The checks: every call NpuKernels and npu_quant.py make (recorded through ``FakeTorchNpu``) binds to the registered
schema (positional arity, keyword names, value types) and uses only documented keywords; the fake's signatures are
the registered schemas; the fake's outputs have the shapes and dtypes the real meta functions give for the same
inputs; the documented facts the fake's formulas rely on are in the docs. This proves our calls and the fake
against Huawei's own files, not the NPU: not verified on NPU.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ascend_nb.engine.accelerated import kernels as K
from ascend_nb.engine.accelerated.npu_quant import NpuInt4Linear
from ascend_nb.engine.accelerated.quantize import quantize_int4
from ascend_nb.errors import AscendNbError
from ascend_nb.wheels import TORCH_NPU_DOCS, TORCH_NPU_META, TORCH_NPU_SCHEMAS, fetch_wheel, read_wheel_text
from tests.test_accelerated_kernels import FakeTorchNpu, randn

FAKE_OPS = sorted(name for name, _ in inspect.getmembers(FakeTorchNpu, inspect.isfunction) if name.startswith("npu_"))
NO_META = {"npu_convert_weight_to_int4pack"}  # registered without a Python meta function: its documented shape instead


# -- schema strings ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    type: str | None  # None: the docs left it out
    default: object  # REQUIRED when there is none
    kw_only: bool


REQUIRED = object()


@dataclass(frozen=True)
class Schema:
    name: str
    params: tuple[Param, ...]
    returns: str

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _default(text: str) -> object:
    text = text.strip()
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    return ast.literal_eval(text)  # numbers, quoted strings, [] lists


def parse_schema(text: str) -> Schema:
    """``name(Type arg=default, *, ...) -> returns`` (the yaml's and the docs' schema lines)."""
    match = re.fullmatch(r"(?:torch_npu\.)?(\w+)\((.*)\)\s*->\s*(.+)", text.strip())
    assert match, f"not a schema: {text!r}"
    params, kw_only = [], False
    for arg in _split_top_level(match.group(2)):
        if arg == "*":
            kw_only = True
            continue
        decl, _, default = arg.partition("=")
        words = decl.split()
        params.append(Param(words[-1], " ".join(words[:-1]) or None, _default(default) if default else REQUIRED, kw_only))
    return Schema(match.group(1), tuple(params), match.group(3).strip())


def registered_schema(yaml_text: str, name: str) -> Schema:
    lines = re.findall(rf"^\s*-?\s*func: ({name}\(.*)$", yaml_text, flags=re.M)
    assert lines, f"{name} is not a registered torch_npu op"
    schemas = {parse_schema(line) for line in lines}
    assert len(schemas) == 1, f"{name} is registered with different schemas: {schemas}"
    return schemas.pop()


def documented_schema(docs_text: str, name: str) -> Schema:
    match = re.search(rf"^torch_npu\.{name}\(.*$", docs_text, flags=re.M)
    assert match, f"{name} has no documented schema in {TORCH_NPU_DOCS}"
    return parse_schema(match.group(0))


def docstring(docs_text: str, name: str) -> str:
    match = re.search(rf'_add_torch_npu_docstr\(\s*"{name}",\s*"""(.*?)"""', docs_text, flags=re.S)
    assert match, f"{name} has no docstring in {TORCH_NPU_DOCS}"
    return match.group(1)


# -- Huawei's meta functions, executed with stand-ins for their imports and registration ---------------------
class _Anything:
    """Stand-in for torch_npu's own names inside the meta functions (its dtypes and error codes): equal to nothing else."""

    def __init__(self, name: str = "torch_npu"):
        self._name = name

    def __getattr__(self, name: str) -> _Anything:
        return _Anything(f"{self._name}.{name}")

    def __repr__(self) -> str:
        return self._name


def load_meta_functions(source: str) -> tuple[dict, dict]:
    """op name -> Huawei's meta function of the ``npu`` namespace, and the module's globals (its dtype tables).

    The module's imports (torch_npu, which needs CANN) and its module-level calls (``has_side_effect`` on
    ``torch.ops.npu``, which needs the real library) are dropped; ``Library`` / ``impl`` record the functions."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))
                 and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))]
    registry = {}

    class Library:
        def __init__(self, namespace, kind, key):
            self.namespace = namespace

    def impl(library, name):
        def register(fn):
            registry[library.namespace, name] = fn
            return fn
        return register

    def needs_npu(*args, **kwargs):
        raise AssertionError("this meta function asks the CANN version or the SoC: not available here")

    module = {"__name__": "torch_npu_meta_reference", "torch": torch, "math": math, "os": os, "warnings": warnings,
              "torch_npu": _Anything(), "Library": Library, "impl": impl, "has_side_effect": lambda op: None,
              "ErrCode": _Anything("ErrCode"), "ops_error": lambda *args: "", "get_cann_version": needs_npu,
              "get_soc_version": needs_npu}
    exec(compile(tree, TORCH_NPU_META, "exec"), module)
    return {name: fn for (namespace, name), fn in registry.items() if namespace == "npu"}, module


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel():
    return fetch_wheel()


@pytest.fixture(scope="module")
def yaml_text(wheel):
    return read_wheel_text(wheel, TORCH_NPU_SCHEMAS)


@pytest.fixture(scope="module")
def docs_text(wheel):
    return read_wheel_text(wheel, TORCH_NPU_DOCS).replace("\r\n", "\n")  # the file has Windows line ends


@pytest.fixture(scope="module")
def meta(wheel):
    return load_meta_functions(read_wheel_text(wheel, TORCH_NPU_META))


# -- binding a call the way the dispatcher does ----------------------------------------------------------------
def fits(type_: str | None, value) -> bool:
    """Whether a Python value is accepted for a schema type (``int`` takes a torch.dtype: the dispatcher passes
    its ScalarType code, as for npu_quant_matmul's ``int? output_dtype``)."""
    if type_ is None:
        return True
    if type_.endswith("?"):
        if value is None:
            return True
        type_ = type_[:-1]
    if type_.startswith(("int[", "SymInt[")):
        return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    checks = {"Tensor": lambda v: isinstance(v, torch.Tensor),
              "int": lambda v: isinstance(v, (int, torch.dtype)) and not isinstance(v, bool),
              "SymInt": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
              "ScalarType": lambda v: isinstance(v, torch.dtype)}
    assert type_ in checks, f"no check for schema type {type_!r}"
    return checks[type_](value)


def bind(schema: Schema, args: tuple, kwargs: dict, check_types: bool = True) -> tuple[dict, list[str]]:
    """Every parameter's value (defaults filled in) and the problems a real call would raise on."""
    positional = [p for p in schema.params if not p.kw_only]
    problems = []
    if len(args) > len(positional):
        problems.append(f"{len(args)} positional arguments, the schema takes {len(positional)}")
    values = {p.name: a for p, a in zip(positional, args)}
    for name, value in kwargs.items():
        if schema.param(name) is None:
            problems.append(f"keyword {name!r} is not in the schema")
        elif name in values:
            problems.append(f"{name!r} given twice")
        values[name] = value
    for p in schema.params:
        if p.name not in values:
            if p.default is REQUIRED:
                problems.append(f"required {p.name!r} missing")
            values[p.name] = p.default
        elif check_types and not fits(p.type, values[p.name]):
            problems.append(f"{p.name}={values[p.name]!r} does not fit {p.type}")
    return values, problems


def as_meta(value, dtype_codes: dict, type_: str | None):
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, torch.dtype) and type_ and type_.rstrip("?") == "int":
        return dtype_codes[value]  # what the dispatcher hands an ``int`` parameter for a torch.dtype
    return value


def call_meta(fn, schema: Schema, values: dict, dtype_codes: dict):
    args = [as_meta(values[p.name], dtype_codes, p.type) for p in schema.params if not p.kw_only]
    kwargs = {p.name: as_meta(values[p.name], dtype_codes, p.type) for p in schema.params if p.kw_only}
    return fn(*args, **kwargs)


def outputs(result) -> list[tuple[tuple[int, ...], torch.dtype]]:
    results = result if isinstance(result, (tuple, list)) else (result,)
    return [(tuple(t.shape), t.dtype) for t in results]


# -- every call we make, recorded ------------------------------------------------------------------------------
def record_our_calls() -> FakeTorchNpu:
    """Drive every NpuKernels method and NPU linear that calls torch_npu, in float16 and bfloat16."""
    fake = FakeTorchNpu()
    npu = K.NpuKernels(torch_npu_module=fake)
    for dtype in (torch.float16, torch.bfloat16):
        r = lambda *shape, seed=0: randn(*shape, dtype=dtype, seed=seed)  # noqa: E731
        npu.rms_norm(r(2, 5, 64), r(64, seed=1), 1e-6)
        angles = randn(1, 1, 5, 128, seed=2)
        npu.rotary(r(1, 4, 5, 128), angles.cos().to(dtype), angles.sin().to(dtype))
        q, k, v = r(2, 4, 5, 16, seed=3), r(2, 2, 5, 16, seed=4), r(2, 2, 5, 16, seed=5)
        npu.prefill_attention(q, k, v, None, 0.25)
        mask = torch.ones(5, 5, dtype=torch.bool).tril() | torch.eye(5, dtype=torch.bool)
        npu.prefill_attention(q, k, v, mask & torch.tensor([[True] * 5, [False, True, True, True, True]])[:, None, None],
                              0.25)
        key_valid = torch.ones(2, 32, dtype=torch.bool)
        key_valid[1, :3] = False
        npu.decode_attention(r(2, 4, 1, 16, seed=6), r(2, 2, 32, 16, seed=7), r(2, 2, 32, 16, seed=8), 10, key_valid, 0.25)
        for quantize in ("w8a8", "int4"):
            linear = npu.linear(r(96, 64, seed=9) * 0.05, quantize, out_dtype=torch.float32)
            linear(r(2, 3, 64, seed=10))
            linear(r(1, 1, 64, seed=11))
        NpuInt4Linear(quantize_int4(randn(48, 32, seed=12)), fake, dtype)(r(3, 32, seed=13))  # per-channel int4
    return fake


@pytest.fixture(scope="module")
def our_calls() -> FakeTorchNpu:
    return record_our_calls()


# -- the checks ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", FAKE_OPS)
def test_fake_signature_is_the_registered_schema(yaml_text, op):
    """Names, order, keyword-only marker and defaults of each fake op are those the dispatcher enforces."""
    schema = registered_schema(yaml_text, op)
    signature = inspect.signature(getattr(FakeTorchNpu(), op))
    got = [(p.name, p.kind == p.KEYWORD_ONLY, REQUIRED if p.default is p.empty else p.default)
           for p in signature.parameters.values()]
    assert got == [(p.name, p.kw_only, p.default) for p in schema.params]


def test_every_fake_op_is_called_and_every_call_fits_the_real_schemas(our_calls, yaml_text, docs_text, meta):
    """Each recorded call binds to the registered schema (arity, keywords, value types), passes only documented
    keywords with documented defaults, and the fake's outputs have the shapes and dtypes of Huawei's meta
    function for the same inputs."""
    metas, module = meta
    assert sorted({call[0] for call in our_calls.log}) == FAKE_OPS  # no fake op left untested, none missing
    problems = []
    for op, args, kwargs, result in our_calls.log:
        schema, documented = registered_schema(yaml_text, op), documented_schema(docs_text, op)
        values, wrong = bind(schema, args, kwargs)
        problems += [f"{op}: {p}" for p in wrong]
        for name in kwargs:  # keywords we pass: documented, with the registered kind and default
            doc, real = documented.param(name), schema.param(name)
            if doc is None or real is None or (doc.kw_only, doc.default) != (real.kw_only, real.default):
                problems.append(f"{op}: keyword {name!r}: documented {doc}, registered {real}")
        if len(args) > len([p for p in documented.params if not p.kw_only]):
            problems.append(f"{op}: more positional arguments than documented")
        if op in NO_META:
            continue
        expected = outputs(call_meta(metas[op], schema, values, module["TORCH_DTYPE_MAP"]))
        if outputs(result) != expected:
            problems.append(f"{op}: fake gives {outputs(result)}, the meta function {expected}")
    assert problems == []


def test_int4pack_output_is_the_documented_one(our_calls, docs_text):
    """npu_convert_weight_to_int4pack has no meta function: its documented output, int32 (k, n/8) from (k, n)."""
    doc = docstring(docs_text, "npu_convert_weight_to_int4pack")
    assert "数据类型为int32, shape为(k, n/8), (n, k/8)" in doc and "最后一维度需要8个元素对齐" in doc
    assert "元素的值需要在int4的表示范围内, 即[-8, 7]" in doc
    calls = [(args, result) for op, args, _, result in our_calls.log if op == "npu_convert_weight_to_int4pack"]
    for (weight,), packed in calls:
        assert packed.dtype == torch.int32 and packed.shape == (weight.shape[0], weight.shape[1] // 8)


def test_meta_functions_cover_our_ops(meta):
    metas, module = meta
    assert sorted(set(FAKE_OPS) - NO_META) == sorted(op for op in FAKE_OPS if op in metas)
    assert module["TORCH_DTYPE_MAP"][torch.float16] == 5 and module["TORCH_DTYPE_MAP"][torch.bfloat16] == 15


def test_documented_semantics_the_fake_computes(docs_text):
    """The facts the fake's formulas and our calls rely on, as torch_npu documents them."""
    ifa, pfa = docstring(docs_text, "npu_incre_flash_attention"), docstring(docs_text, "npu_prompt_flash_attention")
    assert "atten_mask: Tensor类型, 取值为1代表该位不参与计算(不生效), 为0代表该位参与计算" in ifa  # True = masked out
    assert "actual_seq_lengths: int型数组, 其shape为(B,)或(1,)" in ifa and "代表key、value中有效的S序列长度" in ifa
    assert "atten_out=softmax(scale*(query*key)+atten_mask)*value" in ifa
    assert "sparse_mode为0时, 代表defaultMask模式" in pfa and "表示pre_tokens和next_tokens之间的部分需要计算" in pfa
    for doc in (ifa, pfa):  # query dtypes on Atlas A2: no float32 (NpuKernels runs the plain twin for float32)
        query = re.search(r"^query: .*?(?=^key)", doc, flags=re.S | re.M).group(0)
        a2 = re.search(r"Atlas A2 训练系列产品/Atlas 800I A2 推理产品: 数据类型支持([\w、]+)", query).group(1)
        assert "float16" in a2.split("、") and "bfloat16" in a2.split("、") and "float32" not in a2
    rms = docstring(docs_text, "npu_rms_norm")
    assert "gamma：Tensor类型，数据类型需要和self保持一致" in rms
    rotary = docstring(docs_text, "npu_rotary_mul")
    assert "output = r1 * input + r2 * x_new" in rotary and "x_new = torch.cat((-x2, x1), dim=-1)" in rotary
    assert "input为BNSD: 11SD、B1SD、BNSD" in rotary
    quant = docstring(docs_text, "npu_dynamic_quant")
    assert "scale=rowMax(abs(x))/DTYPE_MAX\ny=round(x/scale)" in quant
    matmul = docstring(docs_text, "npu_quant_matmul")
    assert "pertoken_scale: Tensor类型, 可选参数. 数据类型支持float32" in matmul
    assert "shape需要是1维(m,), 其中m与x1的m一致" in matmul and "x1与x2最后一维的shape大小不能超过65535" in matmul
    weight_quant = docstring(docs_text, "npu_weight_quant_batchmatmul")
    assert "per_group模式: 输入shape为(ceil(K, antiquant_group_size),  N)" in weight_quant
    assert "per-group场景下要求传入值的范围为[32, K-1]且必须是32的倍数" in weight_quant
    assert "若输入为float16、bfloat16,  其数据类型需与x保持一致" in weight_quant and "K、N的范围为[1, 65535]" in weight_quant
    # the antiquant formula, (weight + offset) * scale: stated for the same family of ops (not in this docstring)
    assert "y_{i}=x_{i}×(weight_{i}+antiquant_offset_{i})×antiquantscale_{i}+bias_{i}" in docs_text
    assert "anti_quant(x)=quant((x+offset)*scale)" in docstring(docs_text, "npu_anti_quant")


def test_our_calls_use_options_every_chip_takes(our_calls, docs_text):
    """Atlas 300I DUO (310P) takes fewer options than A2: the flash attention band (pre_tokens / next_tokens) and
    npu_rotary_mul's head size are chosen so that one call suits both."""
    pfa = docstring(docs_text, "npu_prompt_flash_attention")
    assert "Atlas 推理系列加速卡产品仅支持默认值2147483647" in pfa and "Atlas 推理系列加速卡产品仅支持0和2147483647" in pfa
    rotary = docstring(docs_text, "npu_rotary_mul")
    assert "shape要求输入为4维，其中B维度和N维度数值需小于等于1000，D维度数值为128" in rotary  # jit_compile=True
    for op, args, kwargs, _ in our_calls.log:
        if op == "npu_prompt_flash_attention":
            assert kwargs["pre_tokens"] == 2147483647 and kwargs["next_tokens"] in (0, 2147483647)
        if op == "npu_rotary_mul":
            assert args[0].shape[-1] == 128 and max(args[0].shape[:2]) <= 1000


def test_310p_prompt_attention_repeats_grouped_kv_heads(monkeypatch, docs_text):
    """The 310P's npu_prompt_flash_attention takes num_key_value_heads=0 only: grouped kv heads are repeated first."""
    from ascend_nb.engine.accelerated import npu_quant

    assert "Atlas 推理系列加速卡产品仅支持默认值0" in docstring(docs_text, "npu_prompt_flash_attention")
    q, k, v = randn(2, 4, 5, 16, dtype=torch.float16), randn(2, 2, 5, 16, dtype=torch.float16, seed=1), randn(
        2, 2, 5, 16, dtype=torch.float16, seed=2)
    expected = K.NpuKernels(torch_npu_module=FakeTorchNpu()).prefill_attention(q, k, v, None, 0.25)
    monkeypatch.setattr(npu_quant, "is_310p_device", lambda device: True)
    fake = FakeTorchNpu()
    got = K.NpuKernels(torch_npu_module=fake).prefill_attention(q, k, v, None, 0.25)
    (_, args, kwargs, _), = fake.log
    assert kwargs["num_key_value_heads"] == 0 and args[1].shape == (2, 4, 5, 16) and torch.equal(got, expected)


def test_the_oracle_catches_a_wrong_call(yaml_text, meta):
    """The checks themselves: an unknown keyword, a missing argument, a wrong type and a wrong output shape fail."""
    schema = registered_schema(yaml_text, "npu_incre_flash_attention")
    q = torch.zeros(1, 2, 1, 8, dtype=torch.float16)
    assert bind(schema, (q, q, q), {"num_head": 2})[1] == ["keyword 'num_head' is not in the schema"]
    assert bind(schema, (q, q), {})[1] == ["required 'value' missing"]
    assert bind(schema, (q, q, q), {"actual_seq_lengths": 4})[1] == ["actual_seq_lengths=4 does not fit SymInt[]?"]
    assert bind(schema, (q, q, q, q), {})[1] == ["4 positional arguments, the schema takes 3"]
    values, _ = bind(registered_schema(yaml_text, "npu_rms_norm"), (q, q[0, 0, 0]), {})
    rstd = outputs(call_meta(meta[0]["npu_rms_norm"], registered_schema(yaml_text, "npu_rms_norm"), values, {}))[1]
    assert rstd == ((1, 2, 1, 1), torch.float32)  # not the (1, 2, 1) a careless fake might return
    matmul = registered_schema(yaml_text, "npu_quant_matmul")  # Huawei's own shape checks run in the meta functions
    x1, x2 = torch.zeros(3, 64, dtype=torch.int8), torch.zeros(96, 64, dtype=torch.int8).t()
    values, problems = bind(matmul, (x1, x2, torch.ones(96)), {"pertoken_scale": torch.ones(3, 1), "output_dtype": torch.float16})
    assert problems == []  # the schema takes it; the meta function's check refuses it
    with pytest.raises(RuntimeError, match="pertoken_scale dim num must be 1"):
        call_meta(meta[0]["npu_quant_matmul"], matmul, values, meta[1]["TORCH_DTYPE_MAP"])


def test_fetch_wheel_caches_a_whole_checked_wheel_or_nothing(tmp_path, monkeypatch):
    """A download with the wrong bytes or a failing pip leaves nothing in the cache and says why in one line;
    the pinned bytes are renamed into place and found there the next time without pip."""
    from ascend_nb import wheels

    monkeypatch.setenv("ASCEND_NB_HOME", str(tmp_path))
    pinned = wheels.ReferenceWheel("demo==1.0", "demo-1.0-py3-none-any.whl", hashlib.sha256(b"pinned").hexdigest())

    def pip(payload, returncode=0):
        def run(cmd, **kwargs):
            if payload is not None:
                (Path(cmd[cmd.index("-d") + 1]) / pinned.filename).write_bytes(payload)
            return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution found for demo==1.0")
        return run

    monkeypatch.setattr(wheels.subprocess, "run", pip(b"other"))
    with pytest.raises(AscendNbError, match="has sha256 .* not the pinned"):
        wheels.fetch_wheel(pinned)
    monkeypatch.setattr(wheels.subprocess, "run", pip(None, returncode=1))
    with pytest.raises(AscendNbError, match="could not download demo==1.0 .*No matching distribution"):
        wheels.fetch_wheel(pinned)
    assert [p.name for p in (tmp_path / "wheels").iterdir()] == []  # no partial file, no leftover folder or lock
    monkeypatch.setattr(wheels.subprocess, "run", pip(b"pinned"))
    assert wheels.fetch_wheel(pinned).read_bytes() == b"pinned"
    monkeypatch.setattr(wheels.subprocess, "run", pip(None, returncode=1))  # cached: pip is not asked again
    assert wheels.fetch_wheel(pinned) == tmp_path / "wheels" / pinned.filename
