"""Notifications (head/notify.py) from the live service's code (fake backend, fake
clock) to a real HTTP receiver in this process: signed, retried until the receiver
is back, bounded, and only to the site's webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.core.states import JobState
from tests.runtime.test_service import USER, cycles, scenario, until


class Receiver:
    """A webhook endpoint: records what it is sent."""

    def __init__(self, port: int = 0):
        self.got: list[tuple[dict, dict]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), json.loads(raw), raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [body["event"] for _, body, _ in self.got]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_job_is_told_to_the_webhook_signed_without_its_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUQ_TEST_HOOK_SECRET", "s3cret")
    rx = Receiver()

    async def body(w):
        job_id = await w.submit(max_retries=0, command="python train.py --token hunter2")
        await w.running(job_id)
        w.backend.end(job_id, 1, exit_code=2)
        await until(lambda: "failed" in rx.events())
        headers, sent, raw = next(g for g in rx.got if g[1]["event"] == "failed")
        expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
        assert headers["X-Gpuq-Signature"] == expected and headers["X-Gpuq-Event"] == "failed"
        assert sent["job"]["id"] == job_id and sent["job"]["exit_code"] == 2 and sent["to"] == "failed"
        assert "hunter2" not in raw.decode()  # a notice says what happened, never the job's command
        assert rx.events() == ["failed"]  # `started` was not asked for

    try:
        scenario(
            tmp_path,
            body,
            webhooks=[
                {
                    "name": "chat",
                    "url": rx.url,
                    "events": ["failed", "completed"],
                    "secret_env": "GPUQ_TEST_HOOK_SECRET",
                }
            ],
        )
    finally:
        rx.close()


def test_a_webhook_that_was_down_gets_the_events_once_it_is_back(tmp_path):
    port = free_port()
    holder: list[Receiver] = []

    async def body(w):
        ids = [await w.submit(run_id=f"j{i}") for i in range(2)]
        for job_id in ids:
            await w.running(job_id)
            w.backend.end(job_id, 1)
        await until(lambda: all(w.job(j).state is JobState.COMPLETED for j in ids))
        await cycles(w, 5)
        assert (await w.svc.cluster.webhook_deliveries())["waiting"] == {"chat": 2}
        holder.append(Receiver(port))  # back
        await until(lambda: holder[0].events() == ["completed", "completed"], timeout=20)
        results = (await w.svc.cluster.webhook_deliveries())["deliveries"]
        assert all(r["result"].startswith("delivered (try") for r in results)
        assert [b["job"]["id"] for _, b, _ in holder[0].got] == ids  # in order

    try:
        scenario(
            tmp_path,
            body,
            webhooks=[{"name": "chat", "url": f"http://127.0.0.1:{port}/hook", "events": ["completed"]}],
            webhook_retry_max_wait_s=0.2,
        )
    finally:
        for rx in holder:
            rx.close()


def test_past_its_buffer_the_oldest_events_are_dropped_and_counted(tmp_path):
    port = free_port()  # nothing listens: every delivery fails for now

    async def body(w):
        ids = [await w.submit(run_id=f"j{i}") for i in range(4)]
        for job_id in ids:
            await w.running(job_id)
            w.backend.end(job_id, 1)
        await until(lambda: sum(1 for r in w.svc.notifier.recent if r["result"].startswith("dropped")) >= 1)
        dropped = [r for r in w.svc.notifier.recent if r["result"].startswith("dropped")]
        assert len(dropped) == 2 and w.svc.metrics.webhook_dropped.labels("chat")._value.get() == 2

    scenario(
        tmp_path,
        body,
        webhooks=[{"name": "chat", "url": f"http://127.0.0.1:{port}/hook", "events": ["completed"]}],
        webhook_buffer=2,
        webhook_retry_max_wait_s=0.2,
    )


def test_an_opt_in_webhook_hears_only_jobs_whose_owner_asked(tmp_path):
    rx = Receiver()

    async def body(w):
        quiet = await w.submit(run_id="quiet")
        loud = await w.submit(run_id="loud", notify="END")
        for job_id in (quiet, loud):
            await w.running(job_id)
            w.backend.end(job_id, 1)
        await until(lambda: rx.events() == ["completed"])
        await cycles(w, 5)
        assert [b["job"]["run_id"] for _, b, _ in rx.got] == ["loud"]

    try:
        scenario(
            tmp_path,
            body,
            webhooks=[{"url": rx.url, "events": ["started", "completed"], "opt_in": True}],
            unix_users={"alice": USER},
        )
    finally:
        rx.close()


def test_one_users_burst_pushes_out_neither_another_users_notices_nor_a_nodes():
    from orchestrator.head.notify import Outbox

    box = Outbox(per_owner=3)
    dropped = [box.put("alice", {"n": i}) for i in range(1000)]
    assert sum(d is not None for d in dropped) == 997  # only alice's own oldest went
    box.put("bob", {"n": "bob"})
    box.put(Outbox.SITE, {"n": "node_down"})
    order = []
    while (body := box.next()) is not None:
        order.append(body["n"])
        box.done(body)
    assert order[0] == "node_down"  # the site's first
    assert order[1:3] in (["bob", 997], [997, "bob"])  # then the owners in turn
    assert sorted(map(str, order)) == sorted(["node_down", "bob", "997", "998", "999"])
