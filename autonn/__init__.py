"""Tango autonn service: supernets, latency tables, budgeted architecture search, trained models."""
