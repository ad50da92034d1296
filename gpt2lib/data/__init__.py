"""Data sets of the book, one module per source.

- :mod:`gpt2lib.data.text`: unlabeled text (*The Verdict*, Tiny Shakespeare) cut into
  sliding windows of token IDs for pretraining.
- :mod:`gpt2lib.data.spam`: the SMS Spam Collection, balanced and split, for classification.
- :mod:`gpt2lib.data.instructions`: instruction/input/output records, the Alpaca prompt format
  and the collate function that pads and masks them for instruction tuning.

Import the submodule you need (``from gpt2lib.data import spam``); this package itself imports
nothing, so ``import gpt2lib.data`` stays light.
"""
