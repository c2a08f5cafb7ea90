"""The main window's pages: models, deployments, playground, monitor, settings."""
