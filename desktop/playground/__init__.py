"""The playground's state and logic, apart from its widgets: transcript, requests, metrics, exports."""
