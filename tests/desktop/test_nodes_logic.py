"""The Nodes section's plain logic: rows, the Add form's checks and body, host-key texts, node filters."""

from __future__ import annotations

from desktop.nodes import (ALL_NODES, AUTOMATIC, LOCAL, AddNodeForm, candidate_text, filter_deployments,
                           host_key_changed_text, node_choices, node_rows, trust_question)

GIB = 1 << 30
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_rows_show_address_state_rtt_engine_free_gpu_memory_and_deployments():
    rows = node_rows([
        {"name": "local", "state": "connected", "rtt_ms": 0.0, "engine": {"reachable": True, "version": "26.1"},
         "gpus": [], "deployments": 2},
        {"name": "gpu-box", "transport": "ssh", "address": "root@10.1.2.2:22", "state": "connected",
         "rtt_ms": 0.42, "engine": {"reachable": True, "version": "27.0"},
         "gpus": [{"index": 0, "name": "H100", "memory_total": 80 * GIB, "memory_free": 70 * GIB}],
         "deployments": 1},
        {"name": "lab", "address": "me@lab:22", "state": "unreachable", "rtt_ms": None, "engine": None,
         "gpus": [], "deployments": 0, "error": "No route to host", "hint": "Check the network."},
    ])
    assert rows[0].cells() == ["local", "this machine", "Connected", "—", "Docker 26.1", "no GPU", "2"]
    assert rows[1].cells() == ["gpu-box", "root@10.1.2.2:22", "Connected", "0.4 ms", "Docker 27.0",
                               "GPU 0: 70.0 GiB free of 80.0 GiB", "1"]
    assert rows[2].cells()[2] == "Unreachable"
    assert "No route to host" in rows[2].tooltip() and "Check the network." in rows[2].tooltip()
    assert "0: H100" in rows[1].tooltip()


def test_the_add_form_says_what_is_wrong_per_field():
    assert set(AddNodeForm().errors()) == {"name", "host"}
    assert "'local'" in AddNodeForm(name="local", host="h").errors()["name"]
    assert "lower-case" in AddNodeForm(name="GPU box", host="h").errors()["name"]
    assert "lower-case" in AddNodeForm(name="x" * 33, host="h").errors()["name"]
    assert "User field" in AddNodeForm(name="a", host="root@box").errors()["host"]
    assert "start with '-'" in AddNodeForm(name="a", host="-oProxyCommand=x").errors()["host"]
    assert "no spaces" in AddNodeForm(name="a", host="gpu box").errors()["host"]
    assert AddNodeForm(name="a", host="fe80::1", user="me@corp").errors() == {}
    assert "start with '-'" in AddNodeForm(name="a", host="h", user="-x").errors()["user"]
    assert "brackets" in AddNodeForm(name="a", host="[fe80::1]").errors()["host"]
    assert "1 to 65535" in AddNodeForm(name="a", host="h", port="70000").errors()["port"]
    assert "1 to 65535" in AddNodeForm(name="a", host="h", remote_port="x").errors()["remote_port"]
    assert "does not exist" in AddNodeForm(name="a", host="h", identity_file="/nowhere/id").errors()["identity_file"]
    assert AddNodeForm(name="gpu-box", host="10.1.2.2").errors() == {}


def test_the_ssh_body_is_what_post_api_nodes_takes(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    form = AddNodeForm(name="gpu-box", host=" 10.1.2.2 ", user="root", port="2222", identity_file=str(key),
                       passphrase="pw")
    assert form.errors() == {}
    assert form.body() == {"name": "gpu-box", "transport": "ssh", "remote_port": 8765,
                           "ssh": {"host": "10.1.2.2", "user": "root", "port": 2222, "identity_file": str(key),
                                   "passphrase": "pw"}}
    bare = AddNodeForm(name="n", host="alias").body()["ssh"]
    assert bare == {"host": "alias", "user": None, "port": None, "identity_file": None, "passphrase": None}


def test_the_tls_form_wants_https_and_pem_files_and_sends_their_text(tmp_path):
    form = AddNodeForm(name="n", transport="tls", url="http://box:8765")
    errors = form.errors()
    assert "https://" in errors["url"] and set(errors) == {"url", "ca_cert", "client_cert", "client_key"}
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    assert "not a PEM file" in AddNodeForm(name="n", transport="tls", url="https://b", ca_cert=str(not_pem),
                                           client_cert=str(not_pem), client_key=str(not_pem)).errors()["ca_cert"]
    files = {}
    for k in ("ca_cert", "client_cert", "client_key"):
        (tmp_path / f"{k}.pem").write_text(PEM.replace("CERTIFICATE", k.upper()))
        files[k] = str(tmp_path / f"{k}.pem")
    good = AddNodeForm(name="n", transport="tls", url="https://box:8443/", **files)
    assert good.errors() == {}
    body = good.body()
    assert body["tls"]["url"] == "https://box:8443" and "CLIENT_KEY" in body["tls"]["client_key"]
    assert body["tls"]["token"] is None and "ssh" not in body
    assert AddNodeForm(name="n", transport="tls", url="https://b", token=" t0k ", **files).body()["tls"]["token"] == "t0k"


def test_host_key_texts_show_the_fingerprint_and_type_and_never_offer_to_accept_a_changed_key():
    q = trust_question("gpu-box", {"fingerprint": "SHA256:abcDEF123", "key_type": "ED25519"})
    assert "SHA256:abcDEF123" in q and "ED25519" in q and q.endswith("Trust this key?")
    changed = host_key_changed_text("gpu-box", "The host key of gpu-box changed.", "Remove the old key with "
                                    "ssh-keygen -R.", {"fingerprint": "SHA256:new", "key_type": "ED25519"})
    assert "SHA256:new" in changed and "ssh-keygen -R" in changed and "does not accept" in changed


def test_node_filters_and_choices():
    nodes = [{"name": "local"}, {"name": "zeta"}, {"name": "alpha"}]
    assert node_choices(nodes, with_all=True) == [("All nodes", ALL_NODES), ("This machine", LOCAL),
                                                  ("alpha", "alpha"), ("zeta", "zeta")]
    assert node_choices(nodes, with_auto=True)[-1][1] == AUTOMATIC
    deps = [{"id": "a"}, {"id": "b@zeta", "node": "zeta"}, {"id": "c", "node": "local"}]
    assert [d["id"] for d in filter_deployments(deps, LOCAL)] == ["a", "c"]
    assert [d["id"] for d in filter_deployments(deps, "zeta")] == ["b@zeta"]
    assert len(filter_deployments(deps, ALL_NODES)) == 3


def test_a_placement_candidate_shows_its_node_gpu_and_free_memory():
    text = candidate_text({"node": "gpu-box", "gpu": "0", "free_bytes": 70 * GIB, "need_bytes": 5 * GIB,
                           "level": "ok", "message": "fits"})
    assert text == "gpu-box · GPU 0 · 70.0 GiB free, needs 5.0 GiB — fits"
    assert candidate_text({"node": "local", "gpu": None, "free_bytes": None}).startswith("This machine · free")
