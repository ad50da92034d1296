"""Tooling for tests, scripts and benchmarks; not installed, and never imported by ``gpt2lib``.

- :mod:`tools.offline`: the offline world the tests, the chapter executor, the rehearsal and the
  GPU check run in (``offline_environment``), fed by :mod:`tools.assets`;
- :mod:`tools.mirror`: a local mirror of the book's downloads with stand-in checkpoints, served
  on 127.0.0.1 (``python -m tools.mirror``), written by :mod:`tools.tf_checkpoint`;
- :mod:`tools.pretrain`: the command that pretrains the mini GPT-2 (``python -m tools.pretrain``).
"""
