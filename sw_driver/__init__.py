"""Hotline host driver and training integration."""
