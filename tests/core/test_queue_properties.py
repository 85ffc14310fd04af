"""Property: any sequence of operations keeps the line equal to sorting the queued jobs
by (-priority, submission order), and never leaves a job in a state the table forbids.

A reference model written from the specification (tests/test_states.py's LEGAL table,
not the code's table) predicts each operation's outcome; the queue must agree.
"""

import itertools

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.core.errors import IllegalTransition
from orchestrator.core.queue import JobQueue
from orchestrator.core.states import JobState, Trigger
from tests.core.test_states import LEGAL
from tests.support import examples, make_spec

OPS = [t for t in Trigger if t is not Trigger.RETRY] + ["retry", "reprioritise"]


class QueueMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.queue = JobQueue()
        self.model: dict[str, dict] = {}  # job id -> state, priority, seq, retries, max_retries, infra
        self.clock = 0.0

    def tick(self) -> float:
        self.clock += 1.0
        return self.clock

    @rule(priority=st.integers(1, 4), max_retries=st.integers(0, 2))
    def submit(self, priority, max_retries):
        job = self.queue.enqueue(make_spec(priority=priority, max_retries=max_retries), now=self.tick())
        self.model[job.id] = dict(
            state=JobState.QUEUED,
            priority=priority,
            seq=job.seq,
            retries=0,
            max_retries=max_retries,
            infra=False,
        )

    @precondition(lambda self: self.model)
    @rule(data=st.data(), op=st.sampled_from(OPS), infra=st.booleans(), new_priority=st.integers(1, 4))
    def operate(self, data, op, infra, new_priority):
        job_id = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[job_id]
        now = self.tick()
        if op == "reprioritise":
            expected_ok = not m["state"].is_terminal
            call = lambda: self.queue.set_priority(job_id, new_priority, now)  # noqa: E731
        elif op == "retry":
            expected_ok = m["state"] is JobState.FAILED and (m["infra"] or m["retries"] < m["max_retries"])
            call = lambda: self.queue.retry(job_id, now)  # noqa: E731
        else:
            expected_ok = (m["state"], op) in LEGAL
            call = {
                Trigger.SCHEDULE: lambda: self.queue.schedule(job_id, now, {"n": [0]}),
                Trigger.ALLOCATE: lambda: self.queue.allocate(job_id, now),
                Trigger.START: lambda: self.queue.start(job_id, now),
                Trigger.COMPLETE: lambda: self.queue.complete(job_id, now),
                Trigger.FAIL: lambda: self.queue.fail(job_id, now, "boom", exit_code=1, infrastructure=infra),
                Trigger.PREEMPT: lambda: self.queue.preempt(job_id, now, "p"),
                Trigger.REQUEUE: lambda: self.queue.requeue(job_id, now, "r"),
                Trigger.HOLD: lambda: self.queue.hold(job_id, now),
                Trigger.RELEASE: lambda: self.queue.release(job_id, now),
                Trigger.CANCEL: lambda: self.queue.cancel(job_id, now),
            }[op]

        before = self.queue.get(job_id).model_copy(deep=True)
        line_before = [j.id for j in self.queue.queued()]
        try:
            call()
        except IllegalTransition:
            assert not expected_ok, f"{op} from {m['state']} should have been legal"
            assert self.queue.get(job_id) == before
            assert [j.id for j in self.queue.queued()] == line_before
            return
        assert expected_ok, f"{op} from {m['state']} should have been refused"
        if op == "reprioritise":
            m["priority"] = new_priority
        elif op == "retry":
            if not m["infra"]:
                m["retries"] += 1
            m["state"], m["infra"] = JobState.QUEUED, False
        else:
            m["state"] = LEGAL[(m["state"], op)]
            if op is Trigger.FAIL:
                m["infra"] = infra
            if m["state"] is JobState.QUEUED:
                m["infra"] = False

    @invariant()
    def line_is_priority_then_fifo(self):
        expected = sorted(
            (jid for jid, m in self.model.items() if m["state"] is JobState.QUEUED),
            key=lambda jid: (-self.model[jid]["priority"], self.model[jid]["seq"]),
        )
        assert [j.id for j in self.queue.queued()] == expected
        for pos, jid in enumerate(expected, start=1):
            assert self.queue.position(jid) == pos

    @invariant()
    def states_and_counts_agree_with_the_model(self):
        for jid, m in self.model.items():
            job = self.queue.get(jid)
            assert (
                job.state is m["state"] and int(job.priority) == m["priority"] and job.retries == m["retries"]
            )
            # The history is a chain: each event starts where the previous one ended.
            for prev, ev in itertools.pairwise(job.events):
                assert ev.from_state is prev.to_state
            assert job.events[-1].to_state is job.state
        counts = self.queue.counts()
        for state in JobState:
            assert counts[state] == sum(1 for m in self.model.values() if m["state"] is state)


TestQueueProperties = QueueMachine.TestCase
TestQueueProperties.settings = settings(max_examples=examples(150), stateful_step_count=40, deadline=None)
