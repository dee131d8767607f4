"""CLI: ``ascend-nb convert KIND SRC [DST] [options]``.

KIND is ``gguf``, ``safetensors`` (``pytorch_model*.bin`` -> sharded safetensors), ``baichuan2``,
``aquila`` (remote-code checkpoints -> plain Llama), ``patch-auto-map`` (point ``config.json`` at the
vendor's Ascend modeling file, in place) or ``verify`` (compare SRC and a converted DST by logits).
"""

from __future__ import annotations

import argparse
import json

from ascend_nb.cli import options
from ascend_nb import dtypes
from ascend_nb.convert.sources import CONVERTERS, converter
from ascend_nb.errors import AscendNbError

KINDS = (*CONVERTERS, "patch-auto-map", "verify")
DESCRIPTION = """\
  gguf            GGUF file -> safetensors Llama directory (dequantized)
  safetensors     pytorch_model*.bin -> sharded safetensors (no pickle), optional --dtype
  baichuan2       Baichuan2-7B (remote code) -> plain Llama: W_pack split, NormHead folded, tokenizer
  aquila          Aquila-7B (remote code) -> plain Llama config and tokenizer
  patch-auto-map  point SRC/config.json's auto_map at the vendor's Ascend modeling file (backup kept)
  verify          compare SRC (original) and DST (converted) by logits, per position

Conversions write into a temporary directory, check the result, and rename it to DST."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert weights (gguf, .bin -> safetensors, Baichuan2/Aquila -> Llama), patch auto_map, verify",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=" | ".join(KINDS))
    parser.add_argument("src", metavar="SRC", help="source model directory (or .gguf file)")
    parser.add_argument("dst", metavar="DST", nargs="?", help="output directory (verify: the converted directory)")
    options.add(parser, "--dtype", choices=dtypes.CHOICES,
                help="dtype of the written weights (default: keep the source's; float32 for gguf)")
    parser.add_argument("--max-shard-size", default="5GB",
                        help="largest safetensors file, e.g. 5GB, 500MB (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing DST")
    parser.add_argument("--no-verify", action="store_true", help="skip the check of the converted model")
    parser.add_argument("--verify-dtype", default="float32", choices=dtypes.CHOICES[1:],
                        help="compute dtype of the converted model when verifying (default: %(default)s)")
    parser.add_argument("--verify-device", default="cpu",
                        help="device for the converted model when verifying: cpu, auto, npu, cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--target", help="patch-auto-map: MODULE.CLASS (default: the family's Ascend class)")
    parser.add_argument("--source-kind", choices=("gguf", "baichuan2", "aquila", "llama"),
                        help="verify: what SRC is (default: detected)")
    parser.add_argument("--prompt", action="append", help="verify: a prompt (repeatable; default: a short mixed one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run_convert)


def _needs_dst(args: argparse.Namespace) -> None:
    if not args.dst:
        raise AscendNbError(f"`ascend-nb convert {args.kind}` needs DST: ascend-nb convert {args.kind} SRC DST")


def run_convert(args: argparse.Namespace) -> int:
    if args.kind == "patch-auto-map":
        return _run_patch(args)
    _needs_dst(args)
    if args.kind == "verify":
        return _run_verify(args)
    convert = converter(args.kind)
    options = {"max_shard_size": args.max_shard_size, "force": args.force, "progress": not args.quiet,
               "verify": not args.no_verify}
    if args.kind != "safetensors":
        options.update(verify_dtype=args.verify_dtype, verify_device=args.verify_device)
    result = convert(args.src, args.dst, dtype=args.dtype, **options)
    summary = result.verification.summary() if result.verification is not None else "not verified (--no-verify)"
    if args.json:
        print(json.dumps({"path": str(result.path), "kind": result.kind, "tensors": len(result.tensors),
                          "files": sorted(set(result.weight_map.values())),
                          "verification": result.verification.as_dict() if result.verification else None}))
    else:
        print(f"{result.path}: {len(result.tensors)} tensors in {len(set(result.weight_map.values()))} file(s); {summary}")
    return 0


def _run_patch(args: argparse.Namespace) -> int:
    from ascend_nb.convert.auto_map import patch_auto_map

    if args.dst:
        raise AscendNbError("patch-auto-map edits SRC/config.json in place: give no DST")
    patch = patch_auto_map(args.src, target=args.target)
    if args.json:
        print(json.dumps({"key": patch.key, "previous": patch.previous, "target": patch.target,
                          "changed": patch.changed, "backup": str(patch.backup)}))
    elif patch.changed:
        print(f"auto_map.{patch.key}: {patch.previous} -> {patch.target} (original kept as {patch.backup})")
    else:
        print(f"auto_map.{patch.key} is already {patch.target}: nothing to do")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from ascend_nb.convert.verify import DEFAULT_PROMPTS, verify_conversion

    report = verify_conversion(args.src, args.dst, kind=args.source_kind, prompts=tuple(args.prompt or DEFAULT_PROMPTS),
                               dtype=args.verify_dtype, device=args.verify_device, raise_on_failure=False)
    if args.json:
        print(json.dumps({**report.as_dict(), "table": report.table.to_dict(orient="records")}))
    else:
        print(report.table.to_string(index=False))
        print(report.summary())
    return 0 if report.passed else 1
