"""The Hivegrid client: submit graphs, follow runs, and steer them from application code."""
