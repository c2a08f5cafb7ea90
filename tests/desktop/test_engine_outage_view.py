"""While Docker does not answer, the Deployments table stays readable and says it shows the last state seen.

A real backend reaches the real engine through a socket forwarder the test cuts
(tests/reliability/socket_cut.py); the shared engine is never touched.
"""

from __future__ import annotations

import re

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.reliability.socket_cut import SocketCut
from tests.support.live_server import serve
from tests.support.deployments import launch_ready

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.slow]
TOKEN = "outage-view-token"
H = {"Authorization": f"Bearer {TOKEN}"}


def test_deployments_table_shows_the_last_state_seen_while_the_engine_is_away(make_main_window, qtbot, engine,
                                                                                demo_image, demo_base_image,
                                                                                tmp_path):
    gate = SocketCut(tmp_path / "docker.sock")
    settings = Settings(home=tmp_path / "home", token=TOKEN, docker_host=gate.url,
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    served = f"t{RUN_ID}-outage-view"
    try:
        with serve(create_app(settings)) as url:
            dep_id = launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served})["id"]

            window = make_main_window(url=url, token=TOKEN)
            page = window.deployments
            qtbot.waitUntil(lambda: (row := page.rows.find(dep_id)) is not None and row.status == "ready",
                            timeout=15000)
            shown = set(page.rows.ids())  # every labelled deployment on the engine, this one among them
            gate.cut()
            qtbot.waitUntil(lambda: page.rows.find(dep_id) is not None and page.rows.find(dep_id).stale,
                            timeout=15000)
            row = page.rows.find(dep_id)
            assert row.status_text() == "Ready · last seen" and row.cells()[0] == served
            assert page.summary.text().startswith("Docker does not answer: this is the last state seen"), \
                page.summary.text()
            assert set(page.rows.ids()) == shown and page.model.rowCount() == len(shown), "the table keeps its rows"
            assert all(r.stale for r in page.rows.rows)
            page.select(dep_id)
            assert not page.actions_by_key["stop"].isEnabled(), "no actions on a state that may be gone"
            assert page.actions_by_key["copy"].isEnabled()

            gate.restore()
            qtbot.waitUntil(lambda: not page.rows.find(dep_id).stale, timeout=15000)
            assert re.match(r"\d+ deployments · \d+ running · \d+ ready$", page.summary.text()), page.summary.text()
            httpx.delete(f"{url}/api/deployments/{dep_id}", headers=H, timeout=60)
    finally:
        gate.close()
