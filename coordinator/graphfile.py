"""Graph files, for the CLI: the parser is the client's (hivegrid.client accepts the same files
and dicts), so that a document becomes a submission in one place. The format is described in
hivegrid/client/_graphfile.py."""

from __future__ import annotations

from hivegrid.client._graphfile import (
    GraphFileError,
    load_document,
    load_graph_file,
    parse_graph,
    parse_graph_text,
)

__all__ = ["GraphFileError", "load_document", "load_graph_file", "parse_graph", "parse_graph_text"]
