"""Benchmark suite: gpt2lib against Hugging Face ``transformers`` (and ``peft``), in one run.

Usage (from the repository root)::

    python -m benchmarks.run                    # the full suite: prints a markdown table
    python -m benchmarks.run --quick            # small sizes, 2 repetitions (a smoke test)
    python -m benchmarks.run --device cuda --name h100
    python -m benchmarks.run --notebooks        # also time each chapter under pytest --nbval

Both sides get the same weights (Hugging Face's ``GPT2LMHeadModel`` at a seeded random
initialisation, copied into :class:`gpt2lib.GPTModel` with
:func:`gpt2lib.huggingface.load_hf_state_dict`), the same inputs and the same thread count, and are
timed interleaved in the same process (see :mod:`gpt2lib.timing`): warm-up, then several
repetitions, the median reported. Ratios are gpt2lib over the reference, so > 1 means gpt2lib
is faster (for memory, < 1 means it uses less). Sections:

1. forward tokens/s, GPT-2 124M shape, batch 8 x 256, float32;
2. greedy generation, new tokens/s: 32-token prompt, 128 new tokens, batch 1 (gpt2lib with
   and without the KV cache, ``transformers.generate(use_cache=True)``) and batch 8 (prompts
   of different lengths, left-padded); and the speed of one more token after L tokens, with
   and without the cache, for L up to the context (the appendix plots it);
3. one LoRA training step (rank 16 on every linear layer of the blocks, batch 8 x 120):
   tokens/s and peak memory, gpt2lib's :mod:`gpt2lib.lora` against ``peft``;
4. achieved GFLOP/s of (1) against the ``torch.mm`` peak measured in the same run;
5. seconds per chapter under ``pytest --nbval`` (from ``results/notebooks.json``, written by
   ``--notebooks``);
6. a training step (:mod:`benchmarks.training`): tokens/s and MFU, gpt2lib's step against
   transformers with the same optimizer, eager and compiled (16 x 1024 on a GPU, 2 x 256 on a
   CPU).

Section 2 also times the fast path: the settings :func:`gpt2lib.fast.optimize_for_inference`
picks by measuring (``"auto"``), and where compilation is on (``--compile``, by default on
CUDA) gpt2lib's compiled static decode step against transformers' static cache with
``torch.compile`` (its fastest documented configuration).

Plus the bfloat16 check: the forward pass and generation with bf16 weights against float32,
and the share of positions whose top-1 token agrees on a small prompt set. Results go to
``benchmarks/results/<name>.json`` and the table to ``benchmarks/results/<name>.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import forward_flops, matmul_peak, peak_memory
from benchmarks.timing import Timing, time_interleaved
from benchmarks.training import bench_training
from gpt2lib import GPTConfig, GPTModel
from gpt2lib.fast import InferenceSettings, bf16_is_native, optimize_for_inference
from gpt2lib.generate import generate
from gpt2lib.static_decode import StaticDecoder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
NOTEBOOKS_JSON = RESULTS / "notebooks.json"
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")  # every linear layer inside the blocks
PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Every effort moves you",
    "To be, or not to be, that is the question:",
    "In the beginning the Universe was created.",
    "Machine learning is the study of computer algorithms that improve automatically",
    "She sells sea shells by the sea shore, and the shells she sells are",
    "Once upon a time, in a land far, far away, there lived a",
    "The capital of France is Paris, and the capital of Germany is",
]


@dataclasses.dataclass(frozen=True)
class Sizes:
    forward: tuple[int, int] = (8, 256)  # batch, tokens
    prompt: int = 32
    new_tokens: int = 128
    gen_batch: int = 8
    lora: tuple[int, int] = (8, 120)
    lora_rank: int = 16
    reps: int = 5
    slow_reps: int = 3  # the uncached generation
    matmul: int = 2048
    sweep: tuple[int, ...] = (32, 64, 128, 256, 512, 1000)  # cached lengths for the sweep
    train_gpu: tuple[int, int] = (16, 1024)  # batch, tokens of the training step on CUDA
    train_cpu: tuple[int, int] = (2, 256)  # ... and on a CPU


QUICK = Sizes(forward=(2, 64), prompt=8, new_tokens=16, gen_batch=2, lora=(2, 32), reps=2,
              slow_reps=2, matmul=1024, sweep=(16, 64), train_gpu=(2, 128),
              train_cpu=(1, 64))  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the two models ------------------------------------------------------------------------


def build_models(cfg: GPTConfig, device: torch.device, seed: int = 123) -> tuple[GPTModel, Any]:
    """Hugging Face's GPT2LMHeadModel at a seeded random init and gpt2lib's copy of it."""
    import transformers

    from gpt2lib.huggingface import load_hf_state_dict

    transformers.logging.set_verbosity_error()
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.generation_config.eos_token_id = None  # never stop early: both sides make every token
    hf.generation_config.pad_token_id = 0
    ours = load_hf_state_dict(GPTModel(cfg), hf.state_dict()).eval()
    return ours.to(device), hf.to(device)


def parity(ours: GPTModel, hf: Any, device: torch.device) -> float:
    idx = torch.randint(0, ours.cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = ours(idx.to(device)) - hf(input_ids=idx.to(device), use_cache=False).logits
    return diff.abs().max().item()


def bf16_copy(model: GPTModel) -> GPTModel:
    return copy.deepcopy(model).to(torch.bfloat16).eval()


# --- sections ------------------------------------------------------------------------------


def bench_forward(
    ours: GPTModel, hf: Any, ours_bf16: GPTModel | None, compiled: GPTModel | None,
    sizes: Sizes, device: torch.device,
) -> dict[str, Timing]:  # fmt: skip
    B, T = sizes.forward
    idx = torch.randint(0, ours.cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    idx = idx.to(device)
    cases: dict[str, Callable[[], object]] = {
        "gpt2lib": lambda: ours(idx),
        "transformers": lambda: hf(input_ids=idx, use_cache=False).logits,
    }
    if ours_bf16 is not None:
        cases["gpt2lib bf16"] = lambda: ours_bf16(idx)
    if compiled is not None:
        cases["gpt2lib compiled"] = lambda: compiled(idx)
    with torch.inference_mode():
        return time_interleaved(cases, dict.fromkeys(cases, B * T), sizes.reps, device)


def _recording(fn: Callable[[], torch.Tensor], store: dict[str, Any], name: str) -> Callable:
    def run() -> torch.Tensor:
        store[name] = out = fn()
        return out

    return run


def hf_static_compiled(hf: Any) -> Any:
    """A copy of ``hf`` whose forward is compiled for transformers' static cache (its docs)."""
    hf_c = copy.deepcopy(hf)
    hf_c.forward = torch.compile(hf_c.forward, mode="reduce-overhead", fullgraph=True)
    return hf_c


def bench_generate(
    ours: GPTModel, hf: Any, ours_bf16: GPTModel | None, batch: int, sizes: Sizes,
    device: torch.device, uncached: bool,
    fast: tuple[InferenceSettings | None, InferenceSettings | None] = (None, None),
    compiled: bool = False, hf_c: Any = None,
) -> tuple[dict[str, Timing], dict[str, Any]]:  # fmt: skip
    """Greedy decoding of ``new_tokens`` after prompts of up to ``prompt`` tokens.

    ``fast``: the settings ``optimize_for_inference`` chose for a copy of the model at this
    batch size, with ``dtype="auto"`` and with float32 kept (None: not timed); ``compiled``:
    also gpt2lib's compiled static step (float32); ``hf_c``: transformers with a static cache,
    compiled.
    """
    gen = torch.Generator().manual_seed(2)
    V, P, N = ours.cfg.vocab_size, sizes.prompt, sizes.new_tokens
    lengths = [P] if batch == 1 else torch.randint(P // 2, P + 1, (batch,), generator=gen).tolist()
    lengths[0] = P
    idx = torch.randint(1, V, (batch, P), generator=gen)
    mask = torch.tensor([[0] * (P - n) + [1] * n for n in lengths])
    idx = idx.masked_fill(mask == 0, 0).to(device)  # left padding with token 0
    mask = mask.to(device)

    def ours_gen(
        model: GPTModel, n: int, use_cache: bool = True, decoder: StaticDecoder | None = None
    ) -> torch.Tensor:
        if decoder is not None:
            return decoder.generate(idx, n, attention_mask=mask)
        return generate(model, idx, n, use_cache=use_cache, attention_mask=mask)

    def hf_gen(n: int, model: Any = hf, **options: Any) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                input_ids=idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                do_sample=False, use_cache=True, pad_token_id=0, **options,
            )  # fmt: skip

    outputs: dict[str, Any] = {}
    cases = {
        "gpt2lib cached": lambda: ours_gen(ours, N),
        "transformers": lambda: hf_gen(N),
    }
    warm = {"gpt2lib cached": lambda: ours_gen(ours, 8), "transformers": lambda: hf_gen(8)}
    if uncached:
        cases["gpt2lib uncached"] = lambda: ours_gen(ours, N, use_cache=False)
        warm["gpt2lib uncached"] = lambda: ours_gen(ours, 4, use_cache=False)
    if ours_bf16 is not None:
        cases["gpt2lib cached bf16"] = lambda: ours_gen(ours_bf16, N)
        warm["gpt2lib cached bf16"] = lambda: ours_gen(ours_bf16, 8)
    for name, chosen in zip(("gpt2lib fast path", "gpt2lib fp32 fast path"), fast, strict=True):
        if chosen is not None:  # its own choice of decode path
            cases[name] = lambda s=chosen: ours_gen(s.model, N, decoder=s.decoder)
    if compiled:
        decoder = StaticDecoder(ours)  # float32
        cases["gpt2lib compiled"] = lambda: ours_gen(ours, N, decoder=decoder)
    if hf_c is not None:
        cases["transformers static+compile"] = lambda: hf_gen(
            N, hf_c, cache_implementation="static"
        )
    cases = {name: _recording(fn, outputs, name) for name, fn in cases.items()}
    timings = time_interleaved(
        cases,
        dict.fromkeys(cases, batch * N),
        sizes.reps,
        device,
        warmups=warm,
        reps_of={"gpt2lib uncached": sizes.slow_reps},
    )
    new = {name: out[:, P:].cpu() for name, out in outputs.items()}
    ref = new["gpt2lib cached"]
    agree = {name: (t == ref).float().mean().item() for name, t in new.items()}
    return timings, {"prompt_lengths": lengths, "token_agreement_with_gpt2lib_cached": agree}


def bench_sweep(
    ours: GPTModel, lengths: list[int], reps: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Seconds to produce one token after ``L`` tokens, batch 1: one cached step vs. a full pass.

    Cached: one token through the model with ``L`` tokens in the KV cache. Uncached: the
    forward pass over all ``L + 1`` tokens that the loop without a cache runs at that point.
    """
    from gpt2lib.kv_cache import KVCache

    out = {}
    gen = torch.Generator().manual_seed(5)
    for L in lengths:
        idx = torch.randint(0, ours.cfg.vocab_size, (1, L + 1), generator=gen).to(device)
        cache = KVCache.empty(ours.cfg, 1, L + 1, device)
        with torch.inference_mode():
            ours(idx[:, :L], cache=cache)  # fill the cache with L tokens

            def cached_step(cache: KVCache = cache, idx: torch.Tensor = idx, L: int = L) -> None:
                cache.length = L  # forget the previous step's token
                ours.head(ours.hidden(idx[:, L:], cache)[:, -1:])

            cases = {
                "cached": cached_step,
                "uncached": lambda idx=idx: ours.head(ours.hidden(idx)[:, -1:]),
            }
            t = time_interleaved(cases, dict.fromkeys(cases, 1), reps, device)
        out[str(L)] = {f"{k}_tokens_per_s": v.rate for k, v in t.items()}
        log(f"  L={L}: " + ", ".join(f"{k} {v.rate:.1f} tokens/s" for k, v in t.items()))
    return out


def bench_lora(
    ours: GPTModel, hf: Any, sizes: Sizes, device: torch.device
) -> dict[str, Any] | None:
    """One training step of LoRA (rank 16, all block linears, AdamW), gpt2lib vs peft."""
    try:
        from gpt2lib.lora import apply_lora, mark_only_lora_as_trainable
    except ImportError as exc:
        log(f"section 3 skipped: gpt2lib.lora is not available ({exc})")
        return None
    import peft

    B, T = sizes.lora
    V, r = ours.cfg.vocab_size, sizes.lora_rank
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (B, T), generator=gen).to(device)
    y = torch.randint(0, V, (B, T), generator=gen).to(device)

    ours_l = copy.deepcopy(ours).train()
    apply_lora(ours_l, rank=r, alpha=r, targets=LORA_TARGETS)
    mark_only_lora_as_trainable(ours_l)
    peft_cfg = peft.LoraConfig(
        r=r, lora_alpha=r, target_modules=list(LORA_TARGETS), lora_dropout=0.0,
        fan_in_fan_out=True, bias="none",
    )  # fmt: skip
    hf_l = peft.get_peft_model(copy.deepcopy(hf).train(), peft_cfg)

    def stepper(model: torch.nn.Module, logits_of: Callable[[], torch.Tensor]) -> Callable:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> float:
            loss = F.cross_entropy(logits_of().flatten(0, 1), y.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

        return step

    steps = {
        "gpt2lib": stepper(ours_l, lambda: ours_l(x)),
        "transformers+peft": stepper(hf_l, lambda: hf_l(input_ids=x, use_cache=False).logits),
    }
    trainable = {
        "gpt2lib": sum(p.numel() for p in ours_l.parameters() if p.requires_grad),
        "transformers+peft": sum(p.numel() for p in hf_l.parameters() if p.requires_grad),
    }
    timings = time_interleaved(steps, dict.fromkeys(steps, B * T), sizes.reps, device)
    memory = {
        name: sorted(peak_memory(step, device) for _ in range(3))[1] for name, step in steps.items()
    }
    return {"timings": timings, "peak_bytes": memory, "trainable_params": trainable}


def top1_agreement(device: torch.device, fallback: GPTModel) -> dict[str, Any]:
    """Share of prompt positions where bf16 weights pick the same next token as float32."""
    model, source = fallback, "the benchmark's random 124M-shaped weights"
    try:
        from gpt2lib.mini import load_mini  # the project's pretrained mini GPT-2

        model, source = load_mini().to(device).eval(), "the project's mini GPT-2 (pretrained)"
    except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback
        log(f"bf16 agreement on random weights (mini GPT-2 unavailable: {exc})")
    try:
        from gpt2lib.tokenizer import get_tokenizer

        tok = get_tokenizer()
        prompts = [tok.encode(p) for p in PROMPTS]
        prompt_source = f"{len(PROMPTS)} English prompts"
    except Exception as exc:  # noqa: BLE001
        log(f"tokenizer unavailable ({exc}): random token prompts")
        gen = torch.Generator().manual_seed(4)
        prompts = [torch.randint(0, 50257, (12,), generator=gen).tolist() for _ in PROMPTS]
        prompt_source = f"{len(PROMPTS)} random-token prompts"
    low = bf16_copy(model)
    same = total = 0
    with torch.inference_mode():
        for ids in prompts:
            idx = torch.tensor([ids], device=device)
            a, b = model(idx).argmax(-1), low(idx).argmax(-1)
            same += (a == b).sum().item()
            total += a.numel()
    return {
        "agreement": same / total,
        "positions": total,
        "weights": source,
        "prompts": prompt_source,
    }


def run_notebooks(out: Path) -> dict[str, Any]:
    """Time ``pytest --nbval`` on each chapter; write and return ``{notebook: result}``."""
    results = {}
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
            "--nbval-current-env", "--nbval-sanitize-with", "book/nbval_sanitize.cfg",
            str(nb.relative_to(ROOT)),
        ]  # fmt: skip
        log(f"nbval {nb.name} ...")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        results[nb.name] = {"seconds": round(seconds, 1), "passed": proc.returncode == 0}
        log(f"  {seconds:.0f} s, {'passed' if proc.returncode == 0 else 'FAILED'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


# --- the table -----------------------------------------------------------------------------


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def _generation_rows(res: dict[str, Any]) -> list[tuple[str, ...]]:
    s, rows = res["sizes"], []
    for key, batch in (("generate_b1", 1), ("generate_bN", s["gen_batch"])):
        g = res.get(key)
        if not g:
            continue
        t = g["timings"]
        label = f"greedy {s['prompt']}+{s['new_tokens']}, batch {batch}, new tokens/s"
        pairs = (
            ("gpt2lib cached", "transformers", "cached", "transformers generate"),
            ("gpt2lib cached", "gpt2lib uncached", "cached vs uncached", "gpt2lib uncached"),
            ("gpt2lib fast path", "gpt2lib cached", "fast path", "gpt2lib default"),
            ("gpt2lib fp32 fast path", "transformers", "fp32 fast path", "transformers generate"),
            ("gpt2lib fp32 fast path", "gpt2lib uncached", "fp32 fast path vs uncached",
             "gpt2lib uncached"),
            ("gpt2lib compiled", "gpt2lib cached", "compiled static step", "gpt2lib default"),
            ("gpt2lib compiled", "transformers static+compile", "compiled static step",
             "transformers static cache + compile"),
        )  # fmt: skip
        for case, ref, what, ref_label in pairs:
            if case in t and ref in t:
                o, r = t[case]["per_s"], t[ref]["per_s"]
                rows.append(("2", f"{label}, {what}", _fmt(o), f"{_fmt(r)} ({ref_label})",
                             _ratio(o, r)))  # fmt: skip
    return rows


def _training_rows(res: dict[str, Any]) -> list[tuple[str, ...]]:
    tr = res.get("training")
    if not tr:
        return []
    B, T = tr["batch"]
    rows = []
    for mode in ("eager", "compiled"):
        o, h = tr["timings"].get(f"gpt2lib {mode}"), tr["timings"].get(f"transformers {mode}")
        if o and h:
            mo, mh = tr["mfu"][f"gpt2lib {mode}"], tr["mfu"][f"transformers {mode}"]
            rows.append(("6", f"training step {B}x{T}, {tr['dtype']}, {mode}, tokens/s (MFU)",
                         f"{_fmt(o['per_s'])} ({mo:.2f})",
                         f"{_fmt(h['per_s'])} ({mh:.2f}, transformers)",
                         _ratio(o["per_s"], h["per_s"])))  # fmt: skip
    return rows


def make_table(res: dict[str, Any]) -> str:
    """The results as markdown: one row per comparison, gpt2lib / reference as the ratio."""
    meta, s = res["meta"], res["sizes"]
    rows: list[tuple[str, ...]] = []
    fwd = res.get("forward")
    if fwd:
        o, h = fwd["gpt2lib"]["per_s"], fwd["transformers"]["per_s"]
        B, T = s["forward"]
        rows.append(("1", f"forward {B}x{T}, fp32, tokens/s", _fmt(o), f"{_fmt(h)} (transformers)",
                     _ratio(o, h)))  # fmt: skip
    rows += _generation_rows(res)
    lora = res.get("lora")
    if lora:
        t, m = lora["timings"], lora["peak_bytes"]
        B, T = s["lora"]
        o, h = t["gpt2lib"]["per_s"], t["transformers+peft"]["per_s"]
        rows.append(("3", f"LoRA r{s['lora_rank']} train step {B}x{T}, tokens/s", _fmt(o),
                     f"{_fmt(h)} (transformers+peft)", _ratio(o, h)))  # fmt: skip
        mo, mh = m["gpt2lib"] / 2**20, m["transformers+peft"] / 2**20
        rows.append(("3", "LoRA step, peak memory above live, MiB (less is better)", _fmt(mo, 0),
                     f"{_fmt(mh, 0)} (transformers+peft)", _ratio(mo, mh)))  # fmt: skip
    fl = res.get("flops")
    if fl:
        rows.append(("4", f"forward (1) achieved GFLOP/s, fp32 (mm peak {_fmt(fl['peak_fp32'])})",
                     f"{_fmt(fl['gpt2lib'])} ({fl['gpt2lib'] / fl['peak_fp32']:.0%} of peak)",
                     f"{_fmt(fl['transformers'])} ({fl['transformers'] / fl['peak_fp32']:.0%}, transformers)",
                     _ratio(fl["gpt2lib"], fl["transformers"])))  # fmt: skip
        if "gpt2lib bf16" in fl:
            rows.append(("4", f"forward (1) achieved GFLOP/s, bf16 (mm peak {_fmt(fl['peak_bf16'])})",
                         f"{_fmt(fl['gpt2lib bf16'])} ({fl['gpt2lib bf16'] / fl['peak_bf16']:.0%} of peak)",
                         "", ""))  # fmt: skip
    rows += _training_rows(res)
    bf = res.get("bf16")
    if bf:
        if "forward" in bf:
            rows.append(("bf16", "forward, bf16 vs fp32 weights, tokens/s", _fmt(bf["forward"][0]),
                         f"{_fmt(bf['forward'][1])} (gpt2lib fp32)", _ratio(*bf["forward"])))  # fmt: skip
        for key in ("generate_b1", "generate_bN"):
            if key in bf:
                b = 1 if key == "generate_b1" else s["gen_batch"]
                rows.append(("bf16", f"greedy generation batch {b}, bf16 vs fp32, new tokens/s",
                             _fmt(bf[key][0]), f"{_fmt(bf[key][1])} (gpt2lib fp32)",
                             _ratio(*bf[key])))  # fmt: skip
        if "top1" in bf:
            a = bf["top1"]
            rows.append(("bf16", f"top-1 agreement bf16 vs fp32 ({a['positions']} positions)",
                         f"{a['agreement']:.1%}", "", ""))  # fmt: skip
    for name, nb in sorted(res.get("notebooks", {}).items()):
        rows.append(("5", f"pytest --nbval {name}, s", _fmt(nb["seconds"]), "",
                     "" if nb["passed"] else "FAILED"))  # fmt: skip
    head = (
        f"Benchmarks on {meta['device_name']} ({meta['device']}, {meta['threads']} threads), "
        f"torch {meta['torch']}, transformers {meta['transformers']}, peft {meta['peft']}; "
        f"GPT-2 124M shape, random weights; median of {s['reps']} interleaved repetitions."
    )
    lines = [head, "", "| # | measure | gpt2lib | reference | ratio |", "|---|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    sweep = res.get("generation_sweep")
    if sweep:
        lines += ["", "Tokens/s for the next token after L tokens, batch 1, fp32:", "",
                  "| L | cached | uncached | ratio |", "|---:|---:|---:|---:|"]  # fmt: skip
        for L, v in sweep.items():
            c, u = v["cached_tokens_per_s"], v["uncached_tokens_per_s"]
            lines.append(f"| {L} | {_fmt(c)} | {_fmt(u)} | {_ratio(c, u)} |")
    for key, choices in res.get("fast_path", {}).items():
        batch = 1 if key == "generate_b1" else s["gen_batch"]
        for which, settings in choices.items():
            measured = "; ".join(f"{k} {_fmt(r[str(batch)] if str(batch) in r else r[batch])}"
                                 for k, r in settings["measured_tokens_per_s"].items())
            lines += ["", f"Fast path for batch {batch} (dtype {which}): optimize_for_inference "
                      f"chose {settings['chosen']}; measured new tokens/s: {measured}."]  # fmt: skip
    notes = res.get("notes", {})
    if notes:
        lines += [""] + [f"- {n}" for n in notes.values()]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    p.add_argument("--name", default=None, help="results name (default: the device type)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: "
                   "forward,generate,fast,hf-static,uncached,sweep,lora,flops,bf16,train,"
                   "train-compile")  # fmt: skip
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="also time compiled cases: the forward, the static decode step, "
                   "transformers' static cache, the training step (auto: on CUDA only)")  # fmt: skip
    p.add_argument("--notebooks", action="store_true",
                   help="run pytest --nbval on every chapter and record seconds (slow)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--update", action="store_true",
                   help="start from the existing results/<name>.json and replace only the "
                   "sections run now (e.g. with --skip)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import peft
    import transformers

    args = parse_args(argv)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else Sizes()
    if args.reps:
        sizes = dataclasses.replace(
            sizes, reps=args.reps, slow_reps=min(args.reps, sizes.slow_reps)
        )
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    name = args.name or (device.type + ("-quick" if args.quick else ""))
    compile_ = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    use_bf16 = "bf16" not in skip and (device.type == "cuda" or bf16_is_native(device))

    res: dict[str, Any] = {
        "meta": {
            "name": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": device.type,
            "device_name": _device_name(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
            "quick": args.quick,
            "bf16_native": bf16_is_native(device),
        },
        "sizes": dataclasses.asdict(sizes),
        "notes": {},
    }
    result_file = args.out / f"{name}.json"
    if args.update and result_file.is_file():
        old = json.loads(result_file.read_text())
        sizes_now = json.loads(json.dumps(res["sizes"]))  # tuples as JSON lists
        if old["sizes"] != sizes_now or old["meta"]["threads"] != res["meta"]["threads"]:
            raise SystemExit(f"--update: {result_file} was measured with other sizes or threads")
        res = {**old, "meta": {**res["meta"], "first_date": old["meta"]["date"]}}
    cfg = GPTConfig.gpt2("124M", tie_embeddings=True)
    log(f"building models on {device} ({torch.get_num_threads()} threads) ...")
    ours, hf = build_models(cfg, device)
    res["parity_max_abs_logit_diff"] = diff = parity(ours, hf, device)
    res["notes"]["parity"] = f"same weights on both sides: max |logit difference| = {diff:.1e}"
    ours_bf16 = bf16_copy(ours) if use_bf16 else None
    compiled = None
    if compile_:
        compiled = copy.deepcopy(ours)
        compiled.compile()

    if "forward" not in skip:
        log("1. forward ...")
        t = bench_forward(ours, hf, ours_bf16, compiled, sizes, device)
        res["forward"] = {k: v.as_dict() for k, v in t.items()}
        if "flops" not in skip:
            log("4. matmul peaks ...")
            flops = forward_flops(cfg, *sizes.forward)
            fl = {k: flops / v.median / 1e9 for k, v in t.items()}
            fl["peak_fp32"] = matmul_peak(torch.float32, device, sizes.reps, sizes.matmul)
            if use_bf16:
                fl["peak_bf16"] = matmul_peak(torch.bfloat16, device, sizes.reps, sizes.matmul)
            res["flops"] = {**fl, "forward_flops": flops}
        if ours_bf16 is not None:
            res.setdefault("bf16", {})["forward"] = (t["gpt2lib bf16"].rate, t["gpt2lib"].rate)
    hf_c = hf_static_compiled(hf) if compile_ and "hf-static" not in skip else None
    if "generate" not in skip:
        res["fast_path"] = {}  # measured afresh with the generation section
        for key, batch in (("generate_b1", 1), ("generate_bN", sizes.gen_batch)):
            fast = fast32 = None
            if "fast" not in skip:  # what optimize_for_inference picks for this batch size
                log(f"2. optimize_for_inference for batch {batch}: measuring its candidates ...")
                fast = optimize_for_inference(copy.deepcopy(ours), batch_sizes=(batch,))
                fast32 = optimize_for_inference(copy.deepcopy(ours), None, batch_sizes=(batch,))
                res.setdefault("fast_path", {})[key] = {
                    "auto": fast.report(), "float32": fast32.report()
                }
            log(f"2. generation, batch {batch} ...")
            uncached = batch == 1 and "uncached" not in skip
            t, info = bench_generate(
                ours, hf, ours_bf16, batch, sizes, device, uncached, (fast, fast32), compile_, hf_c
            )
            res[key] = {"timings": {k: v.as_dict() for k, v in t.items()}, **info}
            agree = info["token_agreement_with_gpt2lib_cached"]
            res["notes"][key] = (
                f"greedy batch {batch}: share of new tokens equal to gpt2lib cached: "
                + ", ".join(f"{k} {v:.0%}" for k, v in agree.items() if k != "gpt2lib cached")
            )
            if ours_bf16 is not None:
                pair = (t["gpt2lib cached bf16"].rate, t["gpt2lib cached"].rate)
                res.setdefault("bf16", {})[key] = pair
    if "train" not in skip:
        B, T = sizes.train_gpu if device.type == "cuda" else sizes.train_cpu
        log(f"6. training step {B}x{T} ...")
        res["training"] = bench_training(
            ours, hf, B, T, sizes.reps, device, compile_ and "train-compile" not in skip,
            sizes.matmul,
        )  # fmt: skip
    if "sweep" not in skip:
        log("2. tokens/s against sequence length, batch 1 ...")
        res["generation_sweep"] = bench_sweep(ours, list(sizes.sweep), sizes.slow_reps, device)
    if "lora" not in skip:
        log("3. LoRA training step ...")
        lora = bench_lora(ours, hf, sizes, device)
        if lora is None:
            res["notes"]["lora"] = "section 3 skipped: gpt2lib.lora not available"
        else:
            res["lora"] = {**lora, "timings": {k: v.as_dict() for k, v in lora["timings"].items()}}
            tp = lora["trainable_params"]
            res["notes"]["lora"] = (
                f"LoRA trainable parameters: gpt2lib {tp['gpt2lib']:,}, "
                f"peft {tp['transformers+peft']:,}; memory = peak "
                + ("CUDA allocation" if device.type == "cuda" else "RSS (sampled every ms)")
                + " during one step above what was live before it (median of 3)"
            )
    if use_bf16:
        log("bf16 top-1 agreement ...")
        res.setdefault("bf16", {})["top1"] = a = top1_agreement(device, ours)
        res["notes"]["top1"] = (
            f"bf16 top-1 agreement measured with {a['weights']} on {a['prompts']}"
        )
    if args.notebooks:
        run_notebooks(NOTEBOOKS_JSON)
    if NOTEBOOKS_JSON.is_file():
        res["notebooks"] = json.loads(NOTEBOOKS_JSON.read_text())

    args.out.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(res, indent=2) + "\n")  # first: a table bug loses nothing
    table = make_table(res)
    print(table)
    result_file.with_suffix(".md").write_text(table)
    log(f"wrote {result_file} and {result_file.with_suffix('.md').name}")
    return res


if __name__ == "__main__":
    main()
