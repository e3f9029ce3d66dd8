"""Training: fit and evaluate one model under one protocol, and the experiments that say what to fit.

- ``protocols``: honest vs as-published evaluation (which split chooses the checkpoint, what is counted);
- ``experiments``: the experiment registry (``baselines/*.yaml``) and the run profiles;
- ``train``: ``fit`` (one run: train, evaluate, checkpoint, record) and ``evaluate``.

Reads models (fracbench.models), the data layer and serving's checkpoint format and OOD guard; read by
claims (inflation, anatomy, the tables), runs and the top. The API is imported lazily (torch loads only
when ``train`` is used).
"""

__all__ = ["EXPERIMENTS", "PROFILES", "PROTOCOLS", "Experiment", "Protocol", "RunSpec", "evaluate", "fit",
           "load_all", "load_experiment", "resolve_device"]

_API = {"fit": "train", "evaluate": "train", "resolve_device": "train", "RunSpec": "train",
        "PROTOCOLS": "protocols", "Protocol": "protocols",
        "EXPERIMENTS": "experiments", "PROFILES": "experiments", "Experiment": "experiments",
        "load_all": "experiments", "load_experiment": "experiments"}


def __getattr__(name: str):
    """The API above, imported on first use (``import fracbench.training`` itself stays cheap)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
