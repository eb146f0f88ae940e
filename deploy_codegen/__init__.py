"""Tango deploy_codegen service: per-runtime code packages and their parity and latency reports."""
