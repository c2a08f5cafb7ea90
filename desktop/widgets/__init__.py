"""Reusable widgets of the desktop: banner, request tracking, launch progress, the deployments table."""
