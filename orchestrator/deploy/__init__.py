"""What an operator runs: `gpuq up` and `gpuq down` (localcluster.py), starting Ray
with token auth and a private temp dir (raystart.py), and repairing or upgrading a
running install (rollout.py). The top floor: nothing but the CLI imports it.
"""
