"""CLI: ``fetch``, ``generate`` and ``chat`` (the guides' main.py / run_baichuan2_7b.py loop)."""

from __future__ import annotations

import argparse
import json
import sys

from ascend_nb.cli import options
from ascend_nb.dtypes import dtype_name
from ascend_nb.parallel import is_main_process

VERIFY_MODES = {"fast": True, "full": "full", "off": False}  # --verify MODE / --no-verify -> load(verify=...)
FAST_CHECK = ("the default fast check hashes a file again only when its size or modification time changed, "
              "so it is not a guarantee")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every model-loading command takes."""
    for flag in ("--model", "--backend", "--device", "--dtype"):
        options.add(parser, flag)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default: the model's)")
    parser.add_argument("--max-seq-len", type=int, default=None, help="prompt + output budget (static cache size)")
    options.add(parser, "--tp")
    options.add(parser, "--kernels")
    options.add(parser, "--quantize")
    verify = parser.add_mutually_exclusive_group()
    verify.add_argument("--verify", choices=("fast", "full"), default="fast",
                        help=f"check the model files against checksums.sha256: {FAST_CHECK}; full hashes every file")
    verify.add_argument("--no-verify", dest="verify", action="store_const", const="off",
                        help="skip the checksums.sha256 check of the model files")
    served = parser.add_argument_group("served models (--backend openai)")
    served.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    served.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY)")
    served.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")


def load_from_args(args: argparse.Namespace):
    """Validate the generation options first (no model load for a typo), then load."""
    from ascend_nb import GenerationParams, load

    if args.max_new_tokens is not None:
        GenerationParams(max_new_tokens=args.max_new_tokens)
    if args.backend == "openai":
        return load(args.model, backend="openai", base_url=args.base_url, api_key=args.api_key, timeout=args.timeout,
                    quantize=args.quantize)
    return load(args.model, device=args.device, dtype=args.dtype, backend=args.backend, max_seq_len=args.max_seq_len,
                verify=VERIFY_MODES[args.verify], tp=args.tp, kernels=args.kernels, quantize=args.quantize)


def register(subparsers) -> None:
    fetch = subparsers.add_parser("fetch", help="prepare the embedded default model (download + convert once) "
                                                "and build the native CPU kernels")
    fetch.add_argument("--print-path", action="store_true", help="only print the model directory")
    fetch.add_argument("--verify", action="store_true",
                       help=f"hash every file of the model against its checksums.sha256 ({FAST_CHECK}); "
                            "exit 2 naming a damaged file")
    fetch.set_defaults(func=run_fetch)

    generate = subparsers.add_parser("generate", help="one-shot generation with a timing line")
    generate.add_argument("prompt", help="the question or text")
    generate.add_argument("--raw", action="store_true", help="send the prompt as raw text, without the chat template")
    generate.add_argument("--json", action="store_true", help="print {text, ttft_ms, tpot_ms, tokens, ...}")
    generate.add_argument("--speculative", default=None, metavar="METHOD",
                          help="speculative decoding (accelerated backend, batch 1): prompt-lookup, or draft:MODEL[@QUANT] "
                               "(e.g. draft:self@int8, the same weights in int8); off by default")
    add_model_arguments(generate)
    generate.set_defaults(func=run_generate)

    chat = subparsers.add_parser("chat", help="warm up, then a question-and-answer loop on stdin "
                                              "(`stream` toggles streaming, `clear` resets history, `exit` quits)")
    chat.add_argument("--no-stream", action="store_true", help="start with streaming off")
    add_model_arguments(chat)
    chat.set_defaults(func=run_chat)


def run_fetch(args: argparse.Namespace) -> int:
    from ascend_nb.convert.embedded import ensure_embedded_model
    from ascend_nb.models.embedded import embedded_model_dir

    if args.print_path:
        print(embedded_model_dir())
        return 0
    model_dir = ensure_embedded_model()
    if args.verify:
        from ascend_nb.models.checksums import check_manifest

        check_manifest(model_dir, verify="full")
    print(model_dir)
    from ascend_nb import device as devices

    # set-up builds the native CPU kernels too (once per machine), rather than the first load
    paths = devices.runnable_kernel_paths("cpu")
    print(f"CPU kernel paths here ({devices.cpu_features().cpu_class}): {', '.join(paths)}; "
          f"default {devices.place('cpu', 'float32', 'accelerated').kernels}", file=sys.stderr)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from ascend_nb.models.params import GenerationError

    from ascend_nb.models.params import check_speculative

    speculative = check_speculative(args.speculative)  # a typo is refused before the model loads
    engine = load_from_args(args)
    params = engine.params(max_new_tokens=args.max_new_tokens, speculative=speculative)
    try:
        if args.raw:
            result = engine.generate(args.prompt, params)
        else:
            result = engine.chat([{"role": "user", "content": args.prompt}], params)
    except GenerationError as exc:  # a reply that broke off: show what came, then the one-line error (exit 2)
        _print_result(args, engine, exc.result)
        raise
    if is_main_process(engine):
        _print_result(args, engine, result)
    return 0


def _print_result(args: argparse.Namespace, engine, result) -> None:
    t = result.timings
    if args.json:
        print(json.dumps({"text": result.text, "ttft_ms": t.ttft_ms, "tpot_ms": t.tpot_ms, "tokens": t.tokens,
                          "e2e_ms": t.e2e_ms, "tokens_per_s": t.tokens_per_s, "finish_reason": result.finish_reason,
                          "error": result.error, "model": engine.spec.name, "backend": engine.backend,
                          "device": str(engine.device), "dtype": dtype_name(engine.dtype),
                          "quantize": getattr(engine, "quantize", None),
                          "speculative": result.speculative.as_dict() if result.speculative else None},
                         ensure_ascii=False), flush=True)
    elif result.finish_reason == "error":
        if result.text:
            print(f"{result.text} [partial reply]", flush=True)
    else:
        print(result.text)
        spec = result.speculative
        extra = (f", {spec.method}: acceptance {spec.acceptance_rate:.0%}, {spec.tokens_per_step:.2f} tokens/step"
                 if spec else "")
        print(f"[{t.tokens} tokens, TTFT {t.ttft_ms:.1f} ms, TPOT {t.tpot_ms:.1f} ms, {t.tokens_per_s:.1f} tokens/s{extra}]",
              file=sys.stderr)


def run_chat(args: argparse.Namespace) -> int:
    from ascend_nb.models.params import GenerationError

    engine = load_from_args(args)
    params = engine.params(max_new_tokens=args.max_new_tokens)
    engine.generate("Hello", max_new_tokens=4)  # warm-up, as the guides' scripts do
    streaming = not args.no_stream
    history: list[dict[str, str]] = []
    print(f"{engine!r} ready. Type a question; `stream` toggles streaming, `clear` resets, `exit` quits.", flush=True)
    for raw in sys.stdin.buffer:
        try:
            question = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:  # one bad line must not end the session
            print(f"ascend-nb chat: that line is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start}): "
                  "skipped, type it again", file=sys.stderr, flush=True)
            continue
        if not question:
            continue
        if question == "exit":
            break
        if question == "stream":
            streaming = not streaming
            print(f"[streaming {'on' if streaming else 'off'}]", flush=True)
            continue
        if question == "clear":
            history.clear()
            print("[history cleared]", flush=True)
            continue
        history.append({"role": "user", "content": question})
        try:
            reply = engine.chat(history, params, stream=streaming)
            if streaming:
                for piece in reply:
                    print(piece, end="", flush=True)
                print()
                reply = reply.result
            else:
                print(reply.text)
        except GenerationError as exc:  # the reply broke off: mark what came, then the one-line error (exit 2)
            if not streaming:
                print(exc.result.text, end="")
            print(" [partial reply]" if exc.result.text else "", flush=True)
            raise
        history.append({"role": "assistant", "content": reply.text})
        t = reply.timings
        print(f"[TTFT {t.ttft_ms:.1f} ms, TPOT {t.tpot_ms:.1f} ms, {t.tokens} tokens]", flush=True)
    return 0
