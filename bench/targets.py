"""The processes under test, each started on a free loopback port: the upstream, ModelDeck, nginx, LiteLLM."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Target:
    """One way to reach the upstream: a name, a base URL (ending before ``/v1``), headers, its server process."""

    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    pid: int | None = None  # the process whose RSS/CPU is reported (nginx: the worker)
    note: str = ""
    tmp: tempfile.TemporaryDirectory | None = None
    log: Path | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float, headers: dict[str, str] | None = None,
                   log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during start-up:\n{tail}")
        try:
            if httpx.get(url, headers=headers, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)
    finally:
        out.close()


def start_upstream(delay_ms: float = 0.0) -> Target:
    tmp = tempfile.TemporaryDirectory(prefix="modeldeck-bench-upstream-")
    port = free_port()
    log = Path(tmp.name) / "upstream.log"
    proc = _spawn([sys.executable, "-m", "bench.upstream", "--port", str(port), "--delay-ms", str(delay_ms)], log)
    target = Target("direct", f"http://127.0.0.1:{port}", process=proc, pid=proc.pid, tmp=tmp, log=log)
    _wait_until_up(f"{target.base}/v1/models", proc, 20, log=log)
    return target


def start_modeldeck(upstream: Target, asgi_only: bool = False) -> Target:
    tmp = tempfile.TemporaryDirectory(prefix="modeldeck-bench-home-")
    port = free_port()
    log = Path(tmp.name) / "backend.log"
    env = {**os.environ, "MODELDECK_HOME": tmp.name, "MODELDECK_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = _spawn([sys.executable, "-m", "bench.backend_static", "--upstream", f"{upstream.base}/v1",
                   "--port", str(port), *(["--asgi-only"] if asgi_only else [])], log, env)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    target = Target("ModelDeck", f"http://127.0.0.1:{port}", headers=headers, process=proc, pid=proc.pid,
                    tmp=tmp, log=log, note="real modeldeck-backend entry point (log level info)")
    if asgi_only:
        target.name = "ModelDeck (ASGI path)"
    _wait_until_up(f"{target.base}/v1/models", proc, 60, headers, log=log)
    return target


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream model {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def start_nginx(upstream: Target) -> Target | None:
    """nginx as a reverse proxy with ``proxy_buffering off``, one worker; None when nginx is not installed."""
    binary = nginx_binary()
    if binary is None:
        return None
    tmp = tempfile.TemporaryDirectory(prefix="modeldeck-bench-nginx-")
    port = free_port()
    conf = Path(tmp.name) / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp.name, port=port,
                                      upstream_port=upstream.base.rsplit(":", 1)[1]))
    log = Path(tmp.name) / "stdout.log"
    proc = _spawn([binary, "-p", tmp.name, "-c", str(conf)], log)
    target = Target("nginx", f"http://127.0.0.1:{port}", process=proc, tmp=tmp, log=log,
                    note="1 worker, proxy_buffering off, upstream keepalive")
    _wait_until_up(f"{target.base}/v1/models", proc, 20, log=log)
    try:
        import psutil
        children = psutil.Process(proc.pid).children()
        target.pid = children[0].pid if children else proc.pid
    except Exception:  # noqa: BLE001 - the pid only serves RSS figures
        target.pid = proc.pid
    return target


LITELLM_CONF = """\
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: {api_base}
      api_key: bench
litellm_settings:
  drop_params: true
  telemetry: false
general_settings:
  master_key: {master_key}
"""
LITELLM_KEY = "sk-" + "5eb1" * 16  # LiteLLM refuses to start without a strong-looking master key


def litellm_binary() -> str | None:
    """The ``litellm`` proxy command: $MODELDECK_BENCH_LITELLM, this venv's, or the PATH's."""
    for candidate in (os.environ.get("MODELDECK_BENCH_LITELLM"), str(Path(sys.executable).parent / "litellm"),
                      shutil.which("litellm")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def start_litellm(upstream: Target) -> Target | None:
    """LiteLLM's proxy (one worker) in front of the upstream; None when it is not installed."""
    binary = litellm_binary()
    if binary is None:
        return None
    tmp = tempfile.TemporaryDirectory(prefix="modeldeck-bench-litellm-")
    port = free_port()
    conf = Path(tmp.name) / "config.yaml"
    conf.write_text(LITELLM_CONF.format(api_base=f"{upstream.base}/v1", master_key=LITELLM_KEY))
    log = Path(tmp.name) / "litellm.log"
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_PROXY": "*",
           "DISABLE_SCHEMA_UPDATE": "True"}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    proc = _spawn([binary, "--config", str(conf), "--host", "127.0.0.1", "--port", str(port),
                   "--num_workers", "1"], log, env)
    headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
    target = Target("LiteLLM", f"http://127.0.0.1:{port}", headers=headers, process=proc, pid=proc.pid, tmp=tmp,
                    log=log, note="litellm proxy, 1 worker")
    try:
        _wait_until_up(f"{target.base}/v1/models", proc, 120, headers, log=log)
    except Exception:
        target.stop()
        raise
    return target


def litellm_version() -> str | None:
    binary = litellm_binary()
    if binary is None:
        return None
    python = Path(binary).parent / "python"
    try:
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
