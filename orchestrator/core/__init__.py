"""The pure core: what a job is, its state machine, the queue and its order, the
scheduling policy and what it uses (placement, availability over time, preemption,
fair-share, the GPU inventory), the site's configuration and rights, and gpuq's errors.

No Ray, Serve, FastAPI or SQLite here (a test enforces it: tests/test_layout.py): the
live orchestrator, the simulator and the API's validation all call the same code.
"""
