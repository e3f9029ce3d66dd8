"""The top, beside the CLI (fracbench.cli): what meets a person or a cluster through a third-party package.

- ``demo``: the gradio demo (``fracbench demo``, ``gradio_app.py``): a prediction with its warnings and
  Grad-CAM, the lookup, and the committed findings (reads serving, claims' tables and training);
- ``launch``: ``fracbench run --launcher submitit``: one submitit job per trajectory; importing it adds
  the "submitit" executor to fracbench.runs.runner's ``EXECUTORS``.

gradio and submitit are imported here and nowhere below (import-linter's forbidden contract, pyproject.toml),
and only inside the functions that need them. Nothing is imported by this ``__init__``.
"""
