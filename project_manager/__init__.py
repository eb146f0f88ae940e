"""Tango project_manager service: projects, device profiles, pipeline runs; serves the web UI."""
