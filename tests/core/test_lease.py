"""The head's count of a node's lease (core/lease.py): the requeue never comes before the
node's own fence has ended, whatever the delays between node, GCS and head."""

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.lease import FENCE_KILL_S, Contacts, ray_health_check, requeue_delay

LEASE, MARGIN = 20.0, 10.0


def test_the_first_value_seen_is_not_a_renewal_and_a_change_is():
    c = Contacts(LEASE, MARGIN, since=100.0)
    assert not c.heard("n", b"1", 150.0)  # may be as old as the head's start
    assert c.last_contact("n") == 100.0 and not c.lapsed("n", 1000.0)  # never renewed: Ray judges it
    assert c.heard("n", b"2", 151.0) and c.last_contact("n") == 151.0
    assert not c.heard("n", b"2", 152.0) and c.last_contact("n") == 151.0
    assert not c.lapsed("n", 151.0 + LEASE) and c.lapsed("n", 151.0 + LEASE + 0.1)
    assert c.requeue_at("n") == 151.0 + requeue_delay(LEASE, MARGIN) == 151.0 + LEASE + FENCE_KILL_S + MARGIN


def test_a_lost_node_starts_over():
    c = Contacts(LEASE, MARGIN, since=0.0)
    c.heard("n", b"1", 1.0)
    c.heard("n", b"2", 2.0)
    c.forget("n")
    assert not c.heard("n", b"3", 3.0) and not c.lapsed("n", 100.0)


# One renewal: the node sends it at `sent`; the GCS stores it `to_gcs` later; the head's
# looks are `look` apart. A renewal counts on the node only if it came back in time.
renewals = st.lists(
    st.tuples(
        st.floats(0, 1000),  # sent (the node's clock; the same rate as the head's)
        st.floats(0, 5),  # to the GCS
        st.booleans(),  # its answer came back in time (the node counts it)
    ),
    min_size=1,
    max_size=30,
)


@given(renewals, st.floats(0.1, 3.0))
def test_the_head_never_requeues_before_the_nodes_own_fence_has_ended(renewed, look):
    c = Contacts(LEASE, MARGIN, since=0.0)
    writes = sorted((sent + to_gcs, i) for i, (sent, to_gcs, _) in enumerate(renewed))
    t, value = 0.0, None
    c.heard("n", b"start", 0.0)
    for at, i in writes:  # the head looks every `look` s and sees the latest value written
        while t < at:
            c.heard("n", value, t)
            t += look
        value = str(i).encode()
    c.heard("n", value, t)
    counted = [sent for sent, _, back in renewed if back]
    if counted:  # the node stops its jobs by its last renewal + lease + kill time
        assert c.requeue_at("n") >= max(counted) + LEASE + FENCE_KILL_S


def test_ray_does_not_declare_a_node_dead_before_its_lease_ends_and_grpc_reconnects():
    for lease_s in (2, 4, 10, 20, 60):
        hc = ray_health_check(lease_s)
        # a cut-off node's checks fail about every 2 s (a 1 s time-out, then 1 s to the
        # next), and go on failing after a heal until gRPC's back-off lets it reconnect
        assert hc["health_check_failure_threshold"] * 2 >= 2 * lease_s + 10


def test_the_production_head_in_cluster_yaml_waits_as_long_as_the_default_lease_needs():
    import re
    from pathlib import Path

    from orchestrator.core.config import Config

    text = (Path(__file__).resolve().parents[2] / "cluster.yaml").read_text()
    (threshold,) = re.findall(r"RAY_health_check_failure_threshold=(\d+)", text)
    assert int(threshold) == ray_health_check(Config().node_lease_s)["health_check_failure_threshold"]
