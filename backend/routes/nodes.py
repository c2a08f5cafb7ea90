"""/api/nodes: other machines' ModelDeck backends (backend/nodes.py): add, trust a host key, test, remove."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from backend.errors import Flavour, NodeNotFound, error_body
from backend.nodes import LOCAL, Node, NodeManager, NodeRequest, NodeState
from backend.routes.system import engine_status

router = APIRouter(prefix="/api", tags=["nodes"])


async def _nodes(request: Request) -> NodeManager:
    return request.app.state.nodes


NodesDep = Annotated[NodeManager, Depends(_nodes)]


def _error(code: str, status: int, message: str) -> dict:
    return {"description": message, "content": {"application/json": {
        "example": json.loads(error_body(Flavour.MODELDECK, status, code, message, "what to do"))}}}


_NODE_ERRORS = {
    404: _error("node_not_found", 404, "No node has this name."),
    409: _error("host_key_unknown", 409, "The host key is unknown (details: fingerprint, key_type), "
                                         "or it changed (host_key_changed), or the name is taken (node_exists)."),
    502: _error("node_unreachable", 502, "The node cannot be reached (node_unreachable), refused the login "
                                         "(node_auth_failed), or runs no ModelDeck (node_not_modeldeck)."),
}


class NodeList(BaseModel):
    nodes: list[Node]


class TrustRequest(BaseModel):
    fingerprint: str = Field(description="the SHA256:… fingerprint shown in the host_key_unknown answer",
                             min_length=1, max_length=200)


async def _local(request: Request) -> Node:
    """This backend itself, always first and always connected; its engine as GET /api/engine answers."""
    state = request.app.state
    settings = state.settings
    engine = await asyncio.to_thread(engine_status, state.engine, state.stats, state.deployments, state.history)
    snap = request.app.state.stats.latest()
    gpus = []
    for g in (snap.gpus if snap is not None else []):
        total, used = g.memory_total_bytes, g.memory_used_bytes
        gpus.append({"index": g.index, "name": g.name, "memory_total": total,
                     "memory_free": total - used if total is not None and used is not None else None})
    return Node(name=LOCAL, transport="local", address=f"{settings.host}:{settings.port}", state="connected",
                rtt_ms=0.0, engine=engine.model_dump(), gpus=gpus,
                deployments=len(request.app.state.deployments.list()),
                base_url=f"http://127.0.0.1:{settings.port}")


@router.get("/nodes", operation_id="listNodes", summary="This machine and every node, with state, RTT, GPUs")
async def list_nodes(request: Request, nodes: NodesDep) -> NodeList:
    return NodeList(nodes=[await _local(request), *(n.view() for n in nodes.nodes())])


@router.post("/nodes", status_code=201, operation_id="addNode", responses=_NODE_ERRORS,
             summary="Add a node over SSH (a tunnel to its loopback backend) or TLS with client certificates")
async def add_node(req: NodeRequest, nodes: NodesDep) -> Node:
    """Connects at once. An unknown SSH host key answers 409 ``host_key_unknown`` with its
    fingerprint and keeps the node, waiting for ``POST /api/nodes/{name}/trust``; other failures
    keep nothing."""
    node: NodeState = await nodes.add(req)
    return node.view()


@router.get("/nodes/{name}", operation_id="getNode", summary="One node", responses={404: _NODE_ERRORS[404]})
async def get_node(name: str, request: Request, nodes: NodesDep) -> Node:
    if name == LOCAL:
        return await _local(request)
    return nodes.get(name).view()


@router.post("/nodes/{name}/trust", operation_id="trustNodeHostKey", responses=_NODE_ERRORS,
             summary="Trust the node's SSH host key, if it still has the given fingerprint, and connect")
async def trust_node(name: str, body: TrustRequest, nodes: NodesDep) -> Node:
    return (await nodes.trust(name, body.fingerprint.strip())).view()


@router.post("/nodes/{name}/test", operation_id="testNode", responses=_NODE_ERRORS,
             summary="Check the node now (log in, new tunnel, health); answers its error when it fails")
async def test_node(name: str, request: Request, nodes: NodesDep) -> Node:
    if name == LOCAL:
        return await _local(request)
    return (await nodes.test(name)).view()


@router.delete("/nodes/{name}", status_code=204, operation_id="removeNode", responses={404: _NODE_ERRORS[404]},
               summary="Forget a node (its tunnel stops; its deployments keep running there)")
async def remove_node(name: str, nodes: NodesDep) -> Response:
    if name == LOCAL:
        raise NodeNotFound("'local' is this machine itself, not a node; it cannot be removed.",
                           hint="GET /api/nodes lists the nodes that can be removed.")
    await nodes.remove(name)
    return Response(status_code=204)
