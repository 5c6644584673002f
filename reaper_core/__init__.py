"""Anomaly Reaper core library."""
