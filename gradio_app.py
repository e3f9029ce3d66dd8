"""Entry point for `python gradio_app.py` (and `gradio gradio_app.py`): the fracbench demo.

Research software, not a medical device. The page and its options live in fracbench.app.demo;
`fracbench demo --help` lists them. FRACBENCH_LOOKUP_DATA=DATASET[:PATH] indexes that dataset for
the "is this image in the training set?" lookup on the second tab.
"""

import os

from fracbench.app.demo import launch


def __getattr__(name: str):
    # `gradio gradio_app.py` looks for a module-level `demo`; build it only when asked, since finding
    # (or training) a model takes a while and importing this file should not.
    if name == "demo":
        global demo
        from fracbench.app.demo import prepare

        demo = prepare(lookup_data=os.environ.get("FRACBENCH_LOOKUP_DATA") or None)
        return demo
    raise AttributeError(name)


if __name__ == "__main__":
    demo = launch(lookup_data=os.environ.get("FRACBENCH_LOOKUP_DATA") or None)
