"""How well does instruction tuning teach the mini model the procedural tasks?

    python scripts/tune_procedural.py --steps 300 --lr 2e-3 --batch-size 16 --mask-prompt

Loads ``mini-shakespeare``, answers the test split of ``gpt2lib.data.tasks.make_splits()``
greedily, tunes every weight on the training split with ``instruction_tune`` (the library code
chapter 6 uses for the book's data), answers again, and prints exact match per kind, before and
after, with the wall time of the tuning. Offline world: ``gpt2lib.testing.offline``.
"""

from __future__ import annotations

import argparse
import time

import torch

from gpt2lib.data.tasks import exact_match_by_kind, make_splits
from gpt2lib.instruct import generate_responses
from gpt2lib.instruction_tuning import Recipe, instruction_tune
from gpt2lib.testing.offline import offline_environment
from gpt2lib.weights import load_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mask-prompt", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="mini-shakespeare", help="a packaged model")
    args = parser.parse_args()
    offline_environment()
    torch.set_num_threads(args.threads)
    torch.manual_seed(123)
    train, val, test = make_splits()
    model, _ = load_pretrained(args.model)
    before = exact_match_by_kind(
        test, generate_responses(model, test, max_new_tokens=12, batch_size=32)
    )
    recipe = Recipe(
        model=args.model, batch_size=args.batch_size, epochs=1000, max_steps=args.steps,
        lr=args.lr, warmup_steps=args.warmup, mask_prompt=args.mask_prompt,
        eval_every=max(args.steps // 5, 1), eval_batches=2, max_new_tokens=12,
    )  # fmt: skip
    start = time.perf_counter()
    history = instruction_tune(model, train, val, recipe, progress=False)
    seconds = time.perf_counter() - start
    responses = generate_responses(model, test, max_new_tokens=12, batch_size=32)
    after = exact_match_by_kind(test, responses)
    print(f"{vars(args)}: tuning took {seconds:.0f} s, val loss {history.val_loss[-1]:.3f}")
    print(f"{'kind':16s} before  after   an answer after tuning (expected)")
    for kind in after:
        example = next((i for i, r in enumerate(test) if r["kind"] == kind), None)
        shown = "" if example is None else f"{responses[example]!r} ({test[example]['output']!r})"
        print(f"{kind:16s} {before[kind]:6.2f} {after[kind]:6.2f}   {shown}")


if __name__ == "__main__":
    main()
