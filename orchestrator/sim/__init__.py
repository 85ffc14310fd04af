"""The simulator: replays a job trace through the core's policy (`gpuq simulate`).
Imports the core only."""
