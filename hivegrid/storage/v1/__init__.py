"""Generated from protos/hivegrid/storage/v1 by `make gen`. Do not edit."""
