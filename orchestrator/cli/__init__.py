"""The `gpuq` command (main.py) and its HTTP client. It talks to the REST API only,
apart from `gpuq up`, `down` and `simulate`, which start the runtime or the simulator
themselves (main.py says where)."""
