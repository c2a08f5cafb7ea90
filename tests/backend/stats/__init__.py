"""Tests of backend.stats and the stats routes."""
