"""The Discover and Library pages' plain logic, without a window: units, Hub rows, fit badges, downloads, local rows."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from desktop.library import downloads, hub, local, units

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


def test_counts_rates_and_times_left() -> None:
    assert units.format_count(None) == "—"
    assert units.format_count(812) == "812"
    assert units.format_count(34_512) == "34.5k"
    assert units.format_count(2_000_000) == "2M"
    assert units.format_rate(None) == "—"
    assert units.format_rate(12.5 * (1 << 20)) == "12.5 MiB/s"
    assert units.format_eta(None) == "—" and units.format_eta(float("nan")) == "—"
    assert units.format_eta(8.4) == "8 s"
    assert units.format_eta(185) == "3 min 05 s"
    assert units.format_eta(4320) == "1 h 12 min"
    assert units.format_eta(90000) == "1 d 1 h"


def test_parameters_context_and_ages() -> None:
    assert units.format_parameters(None) == "—"
    assert units.format_parameters(494_032_768) == "494M"
    assert units.format_parameters(7_615_616_512) == "7.6B"
    assert units.format_parameters(1_000_000_000) == "1B"
    assert units.format_context(32768) == "32,768" and units.format_context(None) == "—"
    assert units.format_age(None) == "—"
    assert units.format_age("2026-12-02T11:59:30Z", NOW) == "just now"
    assert units.format_age("2026-12-02T11:55:00+00:00", NOW) == "5 min ago"
    assert units.format_age("2026-12-02T09:00:00", NOW) == "3 h ago"  # naive is UTC
    assert units.format_age("2026-11-20T12:00:00Z", NOW) == "12 days ago"
    assert units.format_age("2025-01-05T12:00:00Z", NOW) == "2025-01-05"
    assert units.format_age("not a time", NOW) == "—"


def test_search_and_model_paths() -> None:
    parts = urlsplit(hub.search_path("  qwen 0.5b ", "gguf", "likes", 20))
    assert parts.path == "/api/hub/search"
    assert parse_qs(parts.query) == {"q": ["qwen 0.5b"], "format": ["gguf"], "sort": ["likes"], "limit": ["20"]}
    assert "format" not in parse_qs(urlsplit(hub.search_path("x", "", "downloads")).query)  # any format
    assert hub.model_path("org/Name v2") == "/api/hub/models/org/Name%20v2?revision=main"


def test_result_cells_and_gated_notes() -> None:
    model = {"repo_id": "bartowski/Qwen2.5-0.5B-Instruct-GGUF", "downloads": 123456, "likes": 42,
             "license": "apache-2.0", "gated": False, "last_modified": "2026-12-01T12:00:00Z"}
    cells = hub.result_cells(model)
    assert cells[:5] == ["bartowski/Qwen2.5-0.5B-Instruct-GGUF", "123.5k", "42", "apache-2.0", "—"]
    assert cells[5].endswith("ago") or cells[5] == "2026-12-01"
    assert hub.gated_note(model) is None
    note = hub.gated_note({"repo_id": "meta/llama", "gated": "manual"})
    assert "https://huggingface.co/meta/llama" in note and "Help → First-run check" in note
    assert "review" in note
    assert hub.gated_text("auto") == "yes (automatic)"
    assert hub.result_cells({"repo_id": "x/y", "downloads": None, "likes": None, "license": None})[1:4] == \
        ["—", "—", "—"]


def test_fit_badges_per_device_gpus_first_with_the_message_as_tooltip() -> None:
    variant = {"id": "Q4_K_M", "format": "gguf", "size_bytes": 400 << 20, "runtimes": ["llama-cpp", "ollama"],
               "fit": [{"device": "cpu", "name": "host", "level": "fits", "message": "fits in 30 GiB free"},
                       {"device": "1", "name": "RTX 4090", "level": "too_big", "message": "needs 30 GiB, 2 free"},
                       {"device": "0", "name": "H200", "level": "partial_offload", "message": "offload 20 layers"}],
               "downloaded": True}
    badges = hub.fit_badges(variant)
    assert [b.text for b in badges] == ["◐ GPU 0 partial offload", "✕ GPU 1 too big", "✓ CPU fits"]
    assert [b.role for b in badges] == ["warning", "danger", "success"]
    assert badges[0].tooltip == "GPU 0 · H200: offload 20 layers"
    assert badges[2].tooltip == "fits in 30 GiB free"
    assert hub.fit_badge({"device": "0", "level": "strange"}).level == "unknown"
    assert hub.fit_badge({"device": "cpu", "level": "cpu_only", "message": "no GPU"}).text == "◐ CPU only"
    cells = hub.variant_cells(variant)
    assert cells == ["Q4_K_M", "400.0 MiB", "◐ GPU 0 partial offload · ✕ GPU 1 too big · ✓ CPU fits",
                     "llama.cpp, Ollama", "✓"]
    shards = {"id": "bf16", "format": "safetensors", "runtimes": ["vllm"],
              "files": [{"path": "a.safetensors"}, {"path": "b.safetensors"}, {"path": "config.json"}]}
    assert hub.variant_cells(shards)[0] == "bf16 · 2 shards" and hub.variant_cells(shards)[2] == "—"


def test_other_runtimes_of_a_variant() -> None:
    variant = {"launch": {"recipe": "llama-cpp", "model": "o/r:Q4_K_M"},
               "launches": [{"recipe": "llama-cpp", "model": "o/r:Q4_K_M"},
                            {"recipe": "ollama", "model": "hf.co/o/r:Q4_K_M"}, {"recipe": "vllm"}]}
    assert hub.other_launches(variant) == [{"recipe": "ollama", "model": "hf.co/o/r:Q4_K_M"}]
    assert hub.launch_label(hub.other_launches(variant)[0]) == "Ollama · hf.co/o/r:Q4_K_M"
    assert hub.other_launches({"launch": {"recipe": "vllm", "model": "o/r"}}) == []


def test_the_first_variant_selected_is_the_largest_that_fits_a_gpu() -> None:
    def v(size, level):
        return {"size_bytes": size, "fit": [{"device": "0", "level": level}, {"device": "cpu", "level": "fits"}]}

    assert hub.best_variant([]) == -1
    assert hub.best_variant([v(8, "too_big"), v(4, "fits"), v(2, "fits")]) == 1
    assert hub.best_variant([v(8, "too_big"), v(4, "partial_offload")]) == 1  # none fits: the smallest


def test_download_progress_words() -> None:
    running = {"id": "a", "repo_id": "org/m", "variant": "Q8_0", "state": "running", "bytes_total": 100 << 20,
               "bytes_done": 25 << 20, "rate_bps": 5 << 20, "eta_s": 15}
    assert downloads.download_title(running) == "org/m · Q8_0"
    assert downloads.fraction(running) == 0.25
    assert downloads.progress_text(running) == "25.0 MiB of 100.0 MiB · 5.0 MiB/s · 15 s left"
    assert downloads.progress_text({**running, "state": "failed", "error": "disk full"}) == "Failed: disk full"
    assert downloads.progress_text({**running, "state": "done", "target": "volume x"}) == \
        "Done · 100.0 MiB in volume x"
    assert downloads.fraction({"state": "done", "bytes_total": 0}) == 1.0
    assert downloads.fraction({"state": "queued", "bytes_total": 0}) is None
    shards = {"files": [{"path": "model-00001-of-00002.safetensors", "size": 2 << 20, "bytes_done": 2 << 20},
                        {"path": "model-00002-of-00002.safetensors", "size": 2 << 20, "bytes_done": 1 << 19}]}
    assert downloads.files_text(shards) == ("✓ model-00001-of-00002.safetensors: 2.0 MiB of 2.0 MiB\n"
                                            "model-00002-of-00002.safetensors: 512.0 KiB of 2.0 MiB")
    assert downloads.files_text({}) == ""


def test_download_list_keeps_the_newest_state() -> None:
    jobs = downloads.Downloads()
    jobs.set_all([{"id": "old", "repo_id": "o/m", "variant": None, "state": "done", "created": "2026-12-01T10:00:00Z"},
                  {"id": "new", "repo_id": "o/m", "variant": "Q4", "state": "running", "bytes_done": 50,
                   "created": "2026-12-02T10:00:00Z"}])
    assert [d["id"] for d in jobs.ordered()] == ["new", "old"]
    assert jobs.live_ids() == ["new"]
    assert not jobs.update({"id": "new", "state": "running", "bytes_done": 10})  # an older read answered late
    assert jobs.update({"id": "new", "repo_id": "o/m", "variant": "Q4", "state": "done", "bytes_done": 100,
                        "created": "2026-12-02T10:00:00Z"})
    assert not jobs.update({"id": "new", "state": "running", "bytes_done": 100})  # ended jobs never run again
    assert jobs.live_ids() == [] and jobs.for_variant("o/m", "Q4")["state"] == "done"
    assert jobs.for_variant("o/m", "Q8") is None
    assert jobs.update({"id": "third", "repo_id": "o/n", "state": "queued", "created": "2026-11-01T00:00:00Z"})
    assert [d["id"] for d in jobs.ordered()] == ["third", "new", "old"]  # live first


def test_library_rows_and_refusals() -> None:
    m = {"id": "g1", "kind": "gguf", "name": "qwen-q4.gguf", "path": "/models/qwen-q4.gguf",
         "location": "model folder /models", "size_bytes": 3 << 30,
         "gguf": {"architecture": "qwen2", "parameters": 494_032_768, "quantization": "Q4_K_M",
                  "context_length": 32768},
         "last_launched": None, "used_by": ["qwen-chat"], "launch": {"recipe": "llama-cpp", "model": "/models/q.gguf"}}
    assert local.library_cells(m) == ["qwen-q4.gguf", "GGUF", "Q4_K_M", "494M", "32,768", "3.0 GiB",
                                      "model folder /models", "—", "qwen-chat"]
    snap = {"id": "s1", "kind": "hf_snapshot", "name": "org/m", "variant": None, "size_bytes": 10, "gguf": None,
            "used_by": []}
    assert local.library_cells(snap)[1:5] == ["Hub snapshot", "—", "—", "—"]
    assert local.library_summary([m, snap], 12.4) == "2 models · 3.0 GiB on disk · listed in 12 ms"
    assert "3.0 GiB" in local.delete_question(m) and "model folder /models" in local.delete_question(m)
    refusal = local.delete_refusal(m, 409, "The model is used by a deployment.", {"deployments": ["qwen-chat"]})
    assert refusal == ("Cannot delete “qwen-q4.gguf”: The model is used by a deployment (used by qwen-chat). "
                       "Remove that deployment on the Deployments page first.")
    named = local.delete_refusal(m, 409, "qwen-q4.gguf is used by qwen-chat.", None)  # named once, from used_by
    assert named.count("qwen-chat") == 1 and "Deployments page" in named
    assert local.delete_refusal(m, 404, "No such model.", None) == "Could not delete “qwen-q4.gguf”: No such model."
    assert local.launch_of(m) == ("llama-cpp", "/models/q.gguf") and local.launch_of(snap) is None
