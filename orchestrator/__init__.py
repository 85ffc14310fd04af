"""gpuq: a GPU job scheduler on Ray.

Parts: core/ (pure: the job model, states, queue, policy), sim/ (the simulator),
runtime/ (the orchestrator actor and everything that touches Ray), cli/ (the `gpuq`
command). docs/ARCHITECTURE.md says what each may import.
"""

__version__ = "0.1.0"
