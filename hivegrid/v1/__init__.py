"""Generated from protos/hivegrid/v1 by `make gen`. Do not edit."""
