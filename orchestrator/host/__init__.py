"""What gpuq reads of the machine it runs on: the Unix accounts (accounts.py), its home
folder (paths.py) and the site config file with the folders it leaves unset
(siteconfig.py). The core stays out of all of it; every other part may read it.

Kept light: the supervisor, which starts for every job, imports accounts.py.
"""
