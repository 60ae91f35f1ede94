"""Hivegrid coordinator: owns each run's live task graph and schedules it onto workers."""
