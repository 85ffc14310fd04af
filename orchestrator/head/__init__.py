"""What runs on the head node: the orchestrator actor and its service.

The service (service.py) carries out the core's decisions: requests (requests.py, bulk.py,
dependents.py), launches (launches.py), recovery, the store (store.py, groupcommit.py,
history.py), the fleet's watch, metrics and notices. backend.py (with quarantine.py and
nodes.py) is where the service places and starts things on Ray, behind the Backend
Protocol (backends.py); names.py is the one module the API imports.
"""
