"""Test tooling, kept apart from the library: the core ``gpt2lib`` modules never import it.

- :mod:`tools.mirror`: a local mirror of the book's downloads with stand-in
  checkpoints, served on 127.0.0.1 (``python -m tools.mirror``);
- :mod:`tools.tf_checkpoint`: the writer of OpenAI-format (TensorFlow 1) checkpoints
  the mirror serves;
- :mod:`tools.offline`: the offline world the tests, the chapter executor, the
  rehearsal and the GPU check run in (``offline_environment``).
"""
