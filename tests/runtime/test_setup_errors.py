"""What a user reads when Ray cannot set up their job's runtime env (envs.setup_error):
pip's own words, never Ray's traceback. No cluster needed."""

from orchestrator.runtime.envs import setup_error

PIP_FAILED = """Failed to set up runtime environment.
Could not create the actor because its associated runtime env failed to be created.
[Node 192.0.2.2] Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/_private/runtime_env/agent/runtime_env_agent.py", line 561, in _create
    runtime_env_context = await asyncio.wait_for(
                          ^^^^^^^^^^^^^^^^^^^^^^^
ray._private.runtime_env.utils.SubprocessCalledProcessError: Run cmd[9] failed with the following details.
Command '['/tmp/ray/session/runtime_resources/pip/abc/virtualenv/bin/python', '-m', 'pip', 'install']' returned non-zero exit status 1.
Last 50 lines of stdout:
    Looking in indexes: https://pypi.org/simple
    ERROR: No matching distribution found for tiny==9.9
"""


def test_a_failed_pip_install_reads_as_pips_own_words():
    said = setup_error(Exception(PIP_FAILED))
    assert said.splitlines() == ["Looking in indexes: https://pypi.org/simple",
                                 "ERROR: No matching distribution found for tiny==9.9"]


def test_another_setup_error_keeps_its_last_lines_without_the_traceback():
    said = setup_error(Exception("Failed to set up runtime environment.\n[Node 1] Traceback (most recent call last):\n"
                                 "  File \"x.py\", line 1, in f\n    g()\nRuntimeError: Failed to download runtime_env "
                                 "file package gcs://_ray_pkg_abc.zip from the GCS"))
    assert "Traceback" not in said and "File " not in said
    assert said.endswith("Failed to download runtime_env file package gcs://_ray_pkg_abc.zip from the GCS")
