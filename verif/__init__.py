"""Verification: the PyTorch golden model and the cocotb testbenches."""
