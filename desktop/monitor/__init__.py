"""The monitor's state apart from its widgets: ring-buffered series fed by stats snapshots."""
