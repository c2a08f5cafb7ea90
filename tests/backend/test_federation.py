"""Federation (backend/federation.py): the pure parts, and routing between two real backends.

The integration tests here run two real backends on this machine: the local one (in-process, so the test
can give it a node manager) and a ``modeldeck-backend`` process playing the node, reached directly on its
loopback URL with its own token through a stand-in manager with NodeManager's interface (``nodes()``,
``client``, ``base_url``, ``token``). The proxy path is the one a tunnel's local end takes. Both share this
machine's Docker engine, so the local backend's engine here leaves out the node's containers (labelled
``fedtest.role=node``), as a second machine's engine would. The real second machine (its own network
namespace, sshd and dockerd) is ``test_federation_remote.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

import httpx
import pytest

from backend.app import create_app
from backend.engine import Engine
from backend.federation import (
    POLL_TIMEOUT_S, NodeView, PlacementCandidate, _rewrite, candidate_from, choose, remote_deployment, remote_upstreams, split_id,
)
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import BackendProcess
from tests.support.deployments import demo_body, launch_ready
from tests.support.live_server import serve
from tests.support.waiting import wait_until

NODE_LABEL = "fedtest.role"


# -- pure --------------------------------------------------------------------------------------------


def _raw_dep(dep_id: str = "demo", **kw) -> dict:
    return {"id": dep_id, "name": f"modeldeck-{dep_id}", "container_id": "c1", "recipe": "demo", "model": "demo-tiny",
            "served_name": dep_id, "image": "img", "status": "ready", "ready": True, "state": "running",
            "host_port": 40001, "endpoint": "http://127.0.0.1:40001/v1", "future_field": 1, **kw}


def test_ids_split_only_at_the_last_at():
    assert split_id("demo@gpu1") == ("demo", "gpu1")
    assert split_id("a@b@gpu1") == ("a@b", "gpu1")
    assert split_id("demo") is None
    assert split_id("@gpu1") is None and split_id("demo@") is None


def test_a_remote_deployment_is_the_nodes_answer_under_its_own_id():
    view = NodeView("gpu1", reachable=True, deployments=[_raw_dep()])
    dep = remote_deployment(_raw_dep(), view)
    assert (dep.id, dep.node, dep.status, dep.ready, dep.stale) == ("demo@gpu1", "gpu1", "ready", True, False)
    assert dep.endpoint is None  # the node's loopback means nothing here
    assert remote_deployment({"id": "x", "status": "no-such-status"}, view) is None  # unreadable: left out


def test_a_deployment_on_an_unreachable_node_is_its_last_answer_marked_unreachable():
    view = NodeView("gpu1", reachable=False, error="ConnectError: refused", seen_at=time.time() - 30)
    dep = remote_deployment(_raw_dep(), view)
    assert (dep.status, dep.ready, dep.stale) == ("unreachable", False, True)
    assert "Node 'gpu1' cannot be reached: ConnectError: refused" in dep.engine_error
    assert "30 s ago" in dep.engine_error


def test_remote_upstreams_route_through_the_tunnel_with_the_nodes_token():
    a = NodeView("a", reachable=True, models=[{"id": "m1", "deployment_id": "m1", "state": "unloaded"},
                                              {"id": "shared", "deployment_id": "shared"}])
    b = NodeView("b", reachable=False, error="link down",
                 models=[{"id": "shared", "deployment_id": "shared"}, {"id": "m2", "deployment_id": "m2"}])
    by_name, listed = remote_upstreams([a, b], {"a": "http://127.0.0.1:5001", "b": None}, {"a": "ta", "b": "tb"})
    m1 = by_name["m1"]
    assert (m1.deployment_id, m1.node, m1.base_url, m1.ready) == ("m1@a", "a", "http://127.0.0.1:5001/v1", True)
    assert m1.headers == (("Authorization", "Bearer ta"),)
    assert by_name["shared"].node == "a"  # the first node in name order wins a name
    m2 = by_name["m2"]
    assert (m2.ready, m2.unreachable, m2.loads_on_request) == (False, "link down", False)
    assert [(u.served_name, s) for u, s in listed] == [("m1", "unloaded"), ("shared", "ready"), ("m2", "ready")]
    assert m1.client is None  # through the tunnel: the shared proxy client
    tls_client = object()
    by_name, _ = remote_upstreams([a], {"a": "https://gpu.lab:8765"}, {"a": "ta"}, {"a": tls_client})
    assert by_name["m1"].client is tls_client and by_name["m1"].base_url == "https://gpu.lab:8765/v1"


def _cand(node: str, level: str, free: int | None) -> PlacementCandidate:
    return PlacementCandidate(node=node, level=level, free_bytes=free, message="")


def test_placement_picks_the_most_free_memory_that_fits_ties_to_local():
    assert choose([_cand("local", "ok", 4), _cand("a", "ok", 8), _cand("b", "too_big", 99)]).node == "a"
    assert choose([_cand("local", "ok", 8), _cand("a", "ok", 8)]).node == "local"
    assert choose([_cand("local", "warn", 8), _cand("a", "unknown", 80)]).node == "local"
    assert choose([_cand("local", "unknown", None), _cand("a", "unknown", 3)]).node == "a"
    assert choose([_cand("local", "too_big", 1), _cand("a", "unreachable", None), _cand("b", "refused", 9)]) is None


def test_a_fit_check_on_the_cpu_counts_host_memory():
    cpu = candidate_from("a", {"level": "ok", "message": "m", "bytes_needed": 5, "gpu": None,
                               "gpu_free_bytes": None, "host_free_bytes": 700})
    gpu = candidate_from("b", {"level": "ok", "message": "m", "bytes_needed": 5, "gpu": 1,
                               "gpu_free_bytes": 300, "host_free_bytes": 700})
    assert (cpu.gpu, cpu.free_bytes, cpu.need_bytes) == (None, 700, 5)
    assert (gpu.gpu, gpu.free_bytes) == ("1", 300)


def test_a_nodes_answer_is_rewritten_to_ids_seen_from_here():
    accepted = _rewrite({"id": "demo", "existing": False, "deployment": _raw_dep(),
                         "events_url": "/api/deployments/demo/events"}, "gpu1")
    assert accepted["id"] == "demo@gpu1" and accepted["events_url"] == "/api/deployments/demo@gpu1/events"
    assert (accepted["deployment"]["id"], accepted["deployment"]["node"]) == ("demo@gpu1", "gpu1")
    assert _rewrite({"id": "demo", "lines": ["x"]}, "gpu1") == {"id": "demo@gpu1", "lines": ["x"]}


# -- two real backends ------------------------------------------------------------------------------


class StandInNodes:
    """NodeManager's interface over one backend reached directly on loopback (no tunnel needed)."""

    def __init__(self, name: str, node: BackendProcess):
        self.name, self.node, self.up = name, node, True
        self._client: httpx.AsyncClient | None = None

    def nodes(self):
        return [SimpleNamespace(name=self.name, state="connected" if self.up else "unreachable",
                                error=None if self.up else "the stand-in link is cut")]

    def client(self, name: str) -> httpx.AsyncClient | None:
        if name != self.name or not self.up:
            return None
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.node.url, headers=self.node.auth, trust_env=False)
        return self._client

    def base_url(self, name: str) -> str | None:
        return self.node.url if name == self.name and self.up else None

    def token(self, name: str) -> str | None:
        return self.node.token if name == self.name else None


class WithoutNodeContainers(Engine):
    """This machine's engine as a second machine would leave it: the node's containers are not here."""

    def list(self, labels=None):
        return [c for c in super().list(labels) if c.labels.get(NODE_LABEL) != "node"]


@pytest.fixture()
def pair(demo_image, demo_base_image, tmp_path):
    node = BackendProcess(tmp_path / "node-home", demo_base_image=demo_base_image,
                          env={"MODELDECK_EXTRA_LABELS": f"{RUN_LABEL}={RUN_ID},{NODE_LABEL}=node"})
    node.start()
    settings = Settings(home=tmp_path / "home", demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID}, token="test-token")
    app = create_app(settings, engine=WithoutNodeContainers())
    try:
        with serve(app) as url:
            nodes = StandInNodes("n1", node)
            app.state.nodes = nodes
            yield SimpleNamespace(url=url, token="test-token", app=app, node=node, nodes=nodes)
    finally:
        node.stop()


def api(pair, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{pair.url}{path}", headers={"Authorization": f"Bearer {pair.token}"},
                         timeout=kw.pop("timeout", 60), **kw)


def listed(pair) -> dict[str, dict]:
    r = api(pair, "GET", "/api/deployments")
    assert r.status_code == 200, r.text
    return {d["id"]: d for d in r.json()}


_VOLATILE = re.compile(rb'"(id|created)": ?("(chatcmpl|cmpl)-[0-9a-f]+"|[0-9]+)')


def same_but_ids(a: bytes, b: bytes) -> bool:
    """Equal bytes once the per-request id and timestamp the model server makes up are blanked."""
    return _VOLATILE.sub(b'"\\1":_', a) == _VOLATILE.sub(b'"\\1":_', b)


def test_a_model_on_a_node_is_launched_listed_chatted_with_and_removed_through_the_local_api(pair):
    # The plan is the node's own (its home's id on the labels, not this backend's).
    plan = api(pair, "POST", "/api/deployments/plan", json=demo_body("fed-remote", node="n1"))
    here_plan = api(pair, "POST", "/api/deployments/plan", json=demo_body("fed-remote"))
    assert plan.status_code == here_plan.status_code == 200, plan.text
    launched_from = "modeldeck.launched_from"
    assert plan.json()["labels"][launched_from] != here_plan.json()["labels"][launched_from]

    # Launch on the node from here.
    body = demo_body("fed-remote", node="n1", env={"DEMO_TOKEN_DELAY": "0"})
    r = api(pair, "POST", "/api/deployments", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["id"] == "fed-remote@n1" and r.json()["events_url"] == "/api/deployments/fed-remote@n1/events"
    with httpx.stream("GET", f"{pair.url}/api/deployments/fed-remote@n1/events",
                      headers={"Authorization": f"Bearer {pair.token}"}, timeout=120) as s:
        frames = b"".join(s.iter_raw())
    assert b'"phase": "ready"' in frames or b'"phase":"ready"' in frames, frames[-500:]
    launch_ready(pair.url, pair.token, demo_body("fed-local", env={"DEMO_TOKEN_DELAY": "0"}))

    # Listed with its node; the local one as "local"; nothing of the node's listed as local.
    deps = wait_until(lambda: (d := listed(pair)).get("fed-remote@n1", {}).get("ready") and d, 20,
                      what="the node's deployment listed ready")
    assert deps["fed-remote@n1"]["node"] == "n1" and deps["fed-local"]["node"] == "local"
    assert "fed-remote" not in deps
    one = api(pair, "GET", "/api/deployments/fed-remote@n1").json()
    assert (one["id"], one["node"], one["ready"]) == ("fed-remote@n1", "n1", True)

    # /v1/models shows both, with their node.
    cards = {c["id"]: c for c in api(pair, "GET", "/v1/models").json()["data"]}
    assert (cards["fed-remote"]["node"], cards["fed-remote"]["deployment_id"]) == ("n1", "fed-remote@n1")
    assert cards["fed-local"]["node"] == "local"

    # Chat through the local /v1: the same bytes as asking the node directly.
    ask = {"model": "fed-remote", "messages": [{"role": "user", "content": "Once"}], "max_tokens": 12, "seed": 7}
    here = api(pair, "POST", "/v1/chat/completions", json=ask)
    there = httpx.post(f"{pair.node.url}/v1/chat/completions", headers=pair.node.auth, json=ask, timeout=60)
    assert here.status_code == there.status_code == 200, here.text
    assert same_but_ids(here.content, there.content), (here.content, there.content)
    with httpx.stream("POST", f"{pair.url}/v1/chat/completions", json={**ask, "stream": True},
                      headers={"Authorization": f"Bearer {pair.token}"}, timeout=60) as s:
        streamed_here = b"".join(s.iter_raw())
    with httpx.stream("POST", f"{pair.node.url}/v1/chat/completions", json={**ask, "stream": True},
                      headers=pair.node.auth, timeout=60) as s:
        streamed_there = b"".join(s.iter_raw())
    assert streamed_here.endswith(b"data: [DONE]\n\n")
    assert same_but_ids(streamed_here, streamed_there), (streamed_here, streamed_there)
    # Anthropic's Messages route the same way (the node translates).
    msg = api(pair, "POST", "/v1/messages", json={"model": "fed-remote", "max_tokens": 8,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
    assert msg.status_code == 200 and msg.json()["type"] == "message", msg.text

    # The node's stats, for the Monitor.
    stats = api(pair, "GET", "/api/nodes/n1/stats")
    assert stats.status_code == 200 and "host" in stats.json(), stats.text

    # Actions go to the node: stop, logs, start, remove.
    stopped = api(pair, "POST", "/api/deployments/fed-remote@n1/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped", stopped.text
    assert stopped.json()["id"] == "fed-remote@n1"
    logs = api(pair, "GET", "/api/deployments/fed-remote@n1/logs?tail=5")
    assert logs.status_code == 200 and logs.json()["id"] == "fed-remote@n1"
    # Stopped there and on demand: a request through here loads it there (the node's own on-demand load).
    wait_until(lambda: next((c for c in api(pair, "GET", "/v1/models").json()["data"] if c["id"] == "fed-remote"),
                            {}).get("state") == "unloaded", 20, what="the node's model listed unloaded")
    loaded = api(pair, "POST", "/v1/chat/completions", json={**ask, "max_tokens": 3})
    assert loaded.status_code == 200, loaded.text
    assert api(pair, "GET", "/api/deployments/fed-remote@n1").json()["ready"]
    # The Responses API goes to the node the same way.
    resp = api(pair, "POST", "/v1/responses", json={"model": "fed-remote", "input": "Once", "max_output_tokens": 5})
    assert resp.status_code == 200 and resp.json()["object"] == "response", resp.text
    assert api(pair, "DELETE", "/api/deployments/fed-remote@n1").status_code == 204
    gone = httpx.get(f"{pair.node.url}/api/deployments", headers=pair.node.auth, timeout=10).json()
    assert "fed-remote" not in {d["id"] for d in gone}
    wait_until(lambda: "fed-remote@n1" not in listed(pair), 20, what="the removed deployment to leave the list")
    assert api(pair, "DELETE", "/api/deployments/fed-local").status_code == 204


def test_a_node_that_goes_away_mid_stream(pair):
    launch_ready(pair.url, pair.token, demo_body("fed-slow", node="n1", env={"DEMO_TOKEN_DELAY": "0.1"}))
    launch_ready(pair.url, pair.token, demo_body("fed-here", env={"DEMO_TOKEN_DELAY": "0"}))
    wait_until(lambda: listed(pair).get("fed-slow@n1", {}).get("ready"), 20, what="fed-slow listed ready")
    container = listed(pair)["fed-slow@n1"]["container_id"]

    ask = {"model": "fed-slow", "messages": [{"role": "user", "content": "Once"}], "max_tokens": 300, "stream": True}
    got = b""
    with httpx.stream("POST", f"{pair.url}/v1/chat/completions", json=ask,
                      headers={"Authorization": f"Bearer {pair.token}"}, timeout=60) as s:
        chunks = s.iter_raw()
        while got.count(b"data:") < 3:
            got += next(chunks)
        pair.node.kill()  # the node's backend dies mid-reply: its connection drops, as a cut link's does
        for chunk in chunks:
            got += chunk
    assert b'"type":"upstream_error"' in got.replace(b" ", b""), got[-600:]
    assert got.endswith(b"data: [DONE]\n\n")

    # A local model keeps answering; the list answers fast, the node's deployments marked unreachable.
    here = api(pair, "POST", "/v1/chat/completions",
               json={"model": "fed-here", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3})
    assert here.status_code == 200, here.text
    deps = wait_until(lambda: (d := listed(pair)).get("fed-slow@n1", {}).get("status") == "unreachable" and d, 20,
                      what="the node's deployment marked unreachable")
    assert deps["fed-slow@n1"]["stale"] and "n1" in deps["fed-slow@n1"]["engine_error"]
    t0 = time.perf_counter()
    listed(pair)
    # From the cache: well within the bound of any one call to a node (which would wait for it).
    assert time.perf_counter() - t0 < POLL_TIMEOUT_S
    # Requests and actions for it: a clear 503 naming the node.
    r = api(pair, "POST", "/v1/chat/completions", json={**ask, "stream": False})
    assert r.status_code == 503 and r.json()["error"]["code"] == "node_unreachable", r.text
    assert "'n1'" in r.json()["error"]["message"]
    one = api(pair, "GET", "/api/deployments/fed-slow@n1")  # reading it: the last answer, marked
    assert one.status_code == 200 and one.json()["status"] == "unreachable", one.text
    r = api(pair, "POST", "/api/deployments/fed-slow@n1/stop")
    assert r.status_code == 503 and r.json()["error"]["code"] == "node_unreachable", r.text

    # The node comes back: the same ids, one container each, nothing duplicated.
    pair.node.start()
    deps = wait_until(lambda: (d := listed(pair)).get("fed-slow@n1", {}).get("ready") and d, 60,
                      what="the node's deployment ready again")
    every = api(pair, "GET", "/api/deployments").json()  # as a list: a duplicate would show twice
    # (The node here shares this machine's engine, so it lists fed-here too: only fed-slow is its own.)
    assert [d["container_id"] for d in every if d["id"] == "fed-slow@n1"] == [container]
    assert [d["id"] for d in every if d["node"] == "local"].count("fed-here") == 1
    again = api(pair, "POST", "/v1/chat/completions", json={**ask, "stream": False, "max_tokens": 3})
    assert again.status_code == 200, again.text


def test_bad_node_input_is_a_clear_4xx(pair):
    r = api(pair, "POST", "/api/deployments", json=demo_body("fed-nowhere", node="mars"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "node_not_found", r.text
    assert "'mars'" in r.json()["error"]["message"] and "n1" in r.json()["error"]["message"]
    r = api(pair, "POST", "/api/deployments", json=demo_body("fed-nowhere", node="Not A Node!"))
    assert r.status_code == 422 and "node" in r.text
    for method, path in (("GET", "/api/deployments/x@mars"), ("POST", "/api/deployments/x@mars/stop"),
                         ("GET", "/api/nodes/mars/stats")):
        r = api(pair, method, path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "node_not_found", (path, r.text)
    r = api(pair, "GET", "/api/deployments/nothing-here@n1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "deployment_not_found", r.text
