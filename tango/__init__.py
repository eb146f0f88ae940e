"""Tango platform kernel: the contract, settings, queue, store and Job resource shared by all services."""

__version__ = "0.1.0"
