"""Tests of backend.stats.containers: cgroup figures of real containers, and the v2 layout from files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.stats.containers import CgroupReader, ContainerSource, container_id_of_pid

from tests.conftest import skip_or_fail
from tests.support.waiting import wait_until

from .helpers import BUSY_LOOP, HOLD_100MB

MB = 1024 * 1024


@pytest.mark.docker
def test_real_containers_cpu_and_memory_from_cgroups(run_container):
    busy_id, _ = run_container(BUSY_LOOP)
    mem_id, _ = run_container(HOLD_100MB)
    src = ContainerSource()
    src.sample([busy_id, mem_id])  # the first sample only sets the CPU baseline

    def measured():
        u = src.sample([busy_id, mem_id])
        busy, mem = u[busy_id], u[mem_id]
        return busy.cpu_pct is not None and busy.cpu_pct > 50 and (mem.mem_used_bytes or 0) > 80 * MB and u

    usage = wait_until(measured, timeout=20, interval=0.2, what="a busy core and 100 MB held")
    busy, mem = usage[busy_id], usage[mem_id]
    # A single Python thread cannot use much more than one core.
    assert busy.cpu_pct < 150
    assert mem.mem_used_bytes < 400 * MB
    assert busy.mem_limit_bytes is None and mem.mem_limit_bytes is None  # no --memory given


def test_unknown_container_gives_none_figures():
    src = ContainerSource()
    missing = "f" * 64
    for _ in range(2):
        u = src.sample([missing])[missing]
        assert (u.cpu_pct, u.mem_used_bytes, u.mem_limit_bytes) == (None, None, None)


def test_missing_cgroup_root_gives_none_figures(tmp_path):
    src = ContainerSource(CgroupReader(tmp_path / "nothing-here"))
    u = src.sample(["a" * 64])["a" * 64]
    assert (u.cpu_pct, u.mem_used_bytes, u.mem_limit_bytes) == (None, None, None)


def _v2_tree(root: Path, rel: str, usage_usec: int, current: int, max_: str, inactive_file: int) -> Path:
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory io\n")
    d = root / rel
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.max").write_text(f"{max_}\n")
    (d / "memory.stat").write_text(f"anon 123\nfile 456\ninactive_file {inactive_file}\n")
    return d


@pytest.mark.parametrize("rel", ["system.slice/docker-{id}.scope", "docker/{id}"])
def test_cgroup_v2_layouts(tmp_path, rel):
    cid = "c" * 64
    now = [100.0]
    _v2_tree(tmp_path, rel.format(id=cid), usage_usec=1_000_000, current=300 * MB, max_="max",
             inactive_file=50 * MB)
    src = ContainerSource(CgroupReader(tmp_path), clock=lambda: now[0])
    assert src.reader.version == 2
    first = src.sample([cid])[cid]
    assert first.cpu_pct is None  # no baseline yet
    assert first.mem_used_bytes == 250 * MB and first.mem_limit_bytes is None

    # 1.5 s of CPU over 1 s of wall time: one and a half cores, as docker stats shows.
    now[0] += 1.0
    _v2_tree(tmp_path, rel.format(id=cid), usage_usec=2_500_000, current=300 * MB, max_=str(512 * MB),
             inactive_file=0)
    u = src.sample([cid])[cid]
    assert u.cpu_pct == pytest.approx(150.0)
    assert u.mem_used_bytes == 300 * MB and u.mem_limit_bytes == 512 * MB


def test_cgroup_v1_reader_detects_this_machine():
    if not Path("/sys/fs/cgroup").is_dir():
        skip_or_fail("no cgroup filesystem")
    expected = 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1
    assert CgroupReader().version == expected


@pytest.mark.docker
def test_pid_of_a_container_process_maps_to_its_id(run_container):
    cid, pid = run_container(BUSY_LOOP)
    assert container_id_of_pid(pid) == cid
    assert container_id_of_pid(os.getpid()) is None or container_id_of_pid(os.getpid()) != cid
    assert container_id_of_pid(2**22 + 12345) is None  # no such process
