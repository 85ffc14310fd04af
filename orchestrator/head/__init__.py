"""What runs on the head node: the orchestrator actor and the parts of its service.

service.py composes the parts and starts them (docs/ARCHITECTURE.md, "The head's
parts"): the scheduling loop (loop.py), launches (launches.py, recovery.py), requests
(requests.py, bulk.py, dependents.py, uploads.py), the way to the store (journal.py,
store.py, groupcommit.py, history.py), the fleet's watch, metrics and notices.
backend.py (with placements.py and nodes.py) is where jobs are placed and started on
Ray, behind the Backend Protocol (backends.py); names.py is the one module the API
imports.
"""
