"""Sensors: they stage work and request runs; they never deliver anything themselves."""
