"""Claims: what the paper's numbers are worth. Where the leak is measured, and what is made of the records.

Measured (the runner's experiment kinds call these; pure computation over manifests, caches and models):

- ``leak``: the leak demonstration (planted copies of test images in train);
- ``anatomy``: copies across a split, nearest-train similarity, the external test's manifest;
- ``inflation``: the evaluation artefacts (checkpoint chosen on test, the .jpg denominator);
- ``subgroups``: per-image subgroup attributes (subgroups.csv);
- ``summary``: what ``fracbench data info`` reports about a prepared dataset.

Read from the records: ``tables/`` (every table and the claim verdicts), ``figures``, ``report``,
``check`` (a claim checked on the user's data) and ``audit`` (a dataset's copies and faults, as a page).

Reads training, serving, data, copies and the base modules; read by runs and the top.
The API is imported lazily.
"""

__all__ = ["summarize", "write_audit", "write_check", "write_figures", "write_report", "write_reports",
           "write_subgroups", "write_tables"]

_API = {"write_audit": "audit", "write_check": "check", "summarize": "summary",
        "write_figures": "figures", "write_report": "report", "write_reports": "report",
        "write_subgroups": "subgroups", "write_tables": "tables"}


def __getattr__(name: str):
    """The API above, imported on first use (``import fracbench.claims`` itself stays cheap)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
