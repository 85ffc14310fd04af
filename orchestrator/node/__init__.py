"""What runs on a GPU node, as root (and, after the switch, as the job's user).

The runner (a Ray actor per slot) forks supervisors through its launcher; a supervisor
puts the job in its cgroup (cgroups.py), switches to the job's account and runs the
command to its end (command.py); the agent (a Ray actor per node) serves logs, reports
telemetry and reaps. A Ray job's own cluster (raycluster.py) is started as its user.
Nothing here imports the head or deployment: a node runs without them.

Kept light: the launcher imports the supervisor from here for every slot, and this
package's import must cost it nothing."""
