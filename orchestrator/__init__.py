"""gpuq: a GPU job scheduler on Ray.

Pure core (no Ray): job.py (model), states.py (state machine), queue.py (the line).
"""

__version__ = "0.1.0"
