"""Sensors that start materialisations."""
