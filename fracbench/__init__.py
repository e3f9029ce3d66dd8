"""fracbench: reproduce, and honestly measure, deep-learning fracture detection on X-rays.

Research software, not a medical device. Importing this package is cheap: torch, gradio and
matplotlib are imported only by the modules that need them.
"""

__version__ = "0.1.0"
