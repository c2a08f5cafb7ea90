"""The `docker run` rendering of a ContainerSpec: every field, secrets by name, quoting a shell reads back."""

from __future__ import annotations

import shlex
import subprocess

from hypothesis import given, settings, strategies as st

from backend.run_command import docker_run_args, render_docker_run
from backend.spec import ContainerSpec, Mount

SECRET_VALUE = "hf_DoNotLeakThis"


def make_spec(**kw) -> ContainerSpec:
    base = dict(
        name="modeldeck-sg", image="lmsysorg/sglang:latest",
        command=("--model-path", "Qwen/Qwen2.5-0.5B-Instruct", "--port", "30000"),
        entrypoint=("python3", "-m", "sglang.launch_server"), internal_port=30000, host_port=18001,
        labels={"modeldeck.managed": "true", "modeldeck.id": "sg"}, environment={"A": "1", "HF_TOKEN": SECRET_VALUE},
        secret_env=("HF_TOKEN",), secret_values={"HF_TOKEN": SECRET_VALUE}, gpu_ids=("0", "2"),
        mounts=(Mount("modeldeck-cache-huggingface", "/root/.cache/huggingface"),
                Mount("/home/me/models", "/models", "bind", read_only=True)),
        shm_size="32g", ulimits=(("memlock", -1), ("stack", 67108864)))
    return ContainerSpec(**{**base, **kw})


def test_every_field_in_order_and_the_entrypoint_split():
    args = docker_run_args(make_spec())
    assert args == [
        "docker", "run", "-d", "--name", "modeldeck-sg", "--init", "--restart", "on-failure:3",
        "--security-opt", "no-new-privileges:true", "-p", "127.0.0.1:18001:30000", "--gpus", '"device=0,2"',
        "--shm-size", "32g", "--ulimit", "memlock=-1:-1", "--ulimit", "stack=67108864:67108864",
        "-e", "A=1", "-e", "HF_TOKEN", "-v", "modeldeck-cache-huggingface:/root/.cache/huggingface",
        "-v", "/home/me/models:/models:ro", "--label", "modeldeck.managed=true", "--label", "modeldeck.id=sg",
        # Docker's --entrypoint is one executable; the rest goes before the command.
        "--entrypoint", "python3", "lmsysorg/sglang:latest", "-m", "sglang.launch_server",
        "--model-path", "Qwen/Qwen2.5-0.5B-Instruct", "--port", "30000"]


def test_secret_values_never_appear():
    text = render_docker_run(make_spec())
    assert SECRET_VALUE not in text and SECRET_VALUE not in " ".join(docker_run_args(make_spec()))
    assert "-e HF_TOKEN \\\n" in text


def test_all_gpus_colon_paths_and_no_entrypoint():
    args = docker_run_args(make_spec(gpu_ids=("all",), entrypoint=None, ipc_mode="private",
                                     mounts=(Mount("/data/a:b,c", "/models", "bind", read_only=True),)))
    assert args[args.index("--gpus") + 1] == "all" and args[args.index("--ipc") + 1] == "private"
    assert args[args.index("--mount") + 1] == 'type=bind,"source=/data/a:b,c",target=/models,readonly'
    assert "--entrypoint" not in args and args[-5] == "lmsysorg/sglang:latest"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=20).filter(lambda t: "\x00" not in t), max_size=5),
       st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
                       st.text(max_size=20).filter(lambda t: "\x00" not in t), max_size=3))
def test_a_shell_reads_back_exactly_the_argument_vector(command, env):
    spec = make_spec(command=tuple(command), environment=env, secret_env=(), secret_values={})
    # The shell drops a backslash-newline (line continuation) before it splits words.
    assert shlex.split(render_docker_run(spec).replace("\\\n", "")) == docker_run_args(spec)


def test_bash_reads_back_the_argument_vector():
    """The same through a real shell: bash runs the line with `docker` replaced by a printer of its arguments."""
    spec = make_spec(command=("it's", "$HOME", "a b", "`id`", "\\", '"q"', "*"), environment={"X": "$(id)"})
    text = render_docker_run(spec)
    out = subprocess.run(["bash", "-c", "docker() { printf '%s\\0' docker \"$@\"; }\n" + text],
                         capture_output=True, check=True).stdout
    assert out.decode().split("\0")[:-1] == docker_run_args(spec)


def test_an_automatic_port_is_left_to_docker():
    """Host port 0 is Docker's `ip::port`: the engine assigns a free port when the container starts."""
    args = docker_run_args(make_spec(host_port=0))
    assert args[args.index("-p") + 1] == "127.0.0.1::30000"
    assert docker_run_args(make_spec(host_port=0, host_ip="::1"))[args.index("-p") + 1] == "[::1]::30000"
