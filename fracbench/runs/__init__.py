"""Runs: run the suite. Which experiments, on which dataset, in what order, and whether a record is current.

- ``runner``: ``run_experiments`` (trajectories of experiment x seed, each experiment kind: train,
  external test, leak demo, protocol inflation) and ``EXECUTORS``, where launchers register;
- ``plan``: ``print_plan``, how long a run will take before it starts;
- ``jobs``: launcher options, file locks, the dataset prepared under a lock.

Reads claims (the measurements each kind makes), training, data and the base modules; read by the top,
whose submitit launcher (fracbench.app.launch) adds itself to ``EXECUTORS``. The API is imported lazily.
"""

__all__ = ["EXECUTORS", "LaunchOptions", "plan_run", "print_plan", "run_experiments", "select"]

_API = {"EXECUTORS": "runner", "run_experiments": "runner", "plan_run": "runner", "select": "runner",
        "print_plan": "plan", "LaunchOptions": "jobs"}


def __getattr__(name: str):
    """The API above, imported on first use (``import fracbench.runs`` itself stays cheap)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
