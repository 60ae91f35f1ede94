#!/usr/bin/env bash
# Generates the Python stubs in hivegrid/v1/ from protos/. Run through `make gen`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -f hivegrid/v1/*_pb2*.py hivegrid/v1/*_pb2*.pyi hivegrid/storage/v1/*_pb2*.py hivegrid/storage/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out=. --grpc_python_out=. \
  --plugin=protoc-gen-mypy="$(dirname "$PY")/protoc-gen-mypy" --mypy_out=. \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$PY")/protoc-gen-mypy_grpc" --mypy_grpc_out=. \
  protos/hivegrid/v1/*.proto protos/hivegrid/storage/v1/*.proto
