"""How well does instruction tuning teach the mini model the procedural tasks?

    python scripts/tune_procedural.py                      # chapter 6's recipe, Recipe.mini_tasks()
    python scripts/tune_procedural.py --steps 1500 --seed 7 --threads 1

Loads ``mini-shakespeare``, answers the test split of ``gpt2lib.data.tasks.make_splits()``
greedily, tunes every weight on the training split with ``instruction_tune`` (the library code
chapter 6 uses for the book's data) with the offline ``Recipe.mini_tasks()`` and the changes
given, answers again, and prints exact match per kind, before and after, with the wall time of
the tuning. Offline world: ``tools.offline``. The result depends on the number of
steps and, with too few, on the last bits of the arithmetic and on the seed (the order of the
batches); the docstring of ``Recipe.mini_tasks`` gives the runs measured so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from gpt2lib.data.tasks import exact_match_by_kind, make_splits
from gpt2lib.instruction_tuning import Recipe, generate_responses, instruction_tune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tools/
from gpt2lib.weights import load_pretrained
from tools.offline import offline_environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="max_steps (default: the recipe's)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--min-lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--grad-clip", type=float, help="max gradient norm; 0: no clipping")
    parser.add_argument("--seed", type=int, help="the order of the batches (default: the recipe's)")
    parser.add_argument("--whole-text", action="store_true", help="the prompt in the loss too")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    offline_environment()  # before the recipe: it is the offline profile's
    torch.set_num_threads(args.threads)
    changes = {
        "max_steps": args.steps, "lr": args.lr, "min_lr": args.min_lr,
        "batch_size": args.batch_size, "weight_decay": args.weight_decay, "seed": args.seed,
    }  # fmt: skip
    recipe = dataclasses.replace(
        Recipe.mini_tasks(), **{k: v for k, v in changes.items() if v is not None}
    )
    if args.whole_text:
        recipe = dataclasses.replace(recipe, mask_prompt=False)
    if args.grad_clip is not None:
        recipe = dataclasses.replace(recipe, grad_clip=args.grad_clip or None)
    torch.manual_seed(recipe.seed)
    train, val, test = make_splits()
    model, _ = load_pretrained(recipe.model)
    before = exact_match_by_kind(
        test, generate_responses(model, test, max_new_tokens=recipe.max_new_tokens, batch_size=32)
    )
    start = time.perf_counter()
    history = instruction_tune(model, train, val, recipe, progress=False)
    seconds = time.perf_counter() - start
    responses = generate_responses(model, test, max_new_tokens=recipe.max_new_tokens, batch_size=32)
    after = exact_match_by_kind(test, responses)
    print(f"{recipe}\ntuning took {seconds:.0f} s, val loss {history.val_loss[-1]:.3f}")
    print(f"{'kind':16s} before  after   an answer after tuning (expected)")
    for kind in after:
        example = next((i for i, r in enumerate(test) if r["kind"] == kind), None)
        shown = "" if example is None else f"{responses[example]!r} ({test[example]['output']!r})"
        print(f"{kind:16s} {before[kind]:6.2f} {after[kind]:6.2f}   {shown}")


if __name__ == "__main__":
    main()
