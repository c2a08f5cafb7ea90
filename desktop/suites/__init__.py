"""The Suites page's plain-Python side: case rows, run results, summaries, filters and answer diffs (no Qt)."""
