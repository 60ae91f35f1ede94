#!/usr/bin/env bash
# Generates the Go stubs in gen/hivegrid/v1/ from ../../protos. Run through `make gen`.
# Deterministic: pinned plugin versions, a pinned protoc (the repo venv's grpc_tools), sorted inputs.
set -euo pipefail
cd "$(dirname "$0")"

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PY=${PY:-../../.venv/bin/python}
BIN="$PWD/.bin"

# install_plugin PKG VERSION: go install PKG@VERSION into .bin unless that version is already there.
install_plugin() {
  local pkg=$1 version=$2 name
  name=$(basename "$pkg")
  if [[ -x "$BIN/$name" ]] && go version -m "$BIN/$name" | grep -q "[[:space:]]mod[[:space:]].*[[:space:]]$version[[:space:]]"; then
    return
  fi
  GOBIN="$BIN" go install "$pkg@$version"
}
install_plugin google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_plugin google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

rm -rf gen
mkdir -p gen
# LC_ALL=C: the glob order (and so protoc's input order) does not depend on the locale.
LC_ALL=C "$PY" -m grpc_tools.protoc -I../../protos \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" --go_out=gen --go_opt=paths=source_relative \
  --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" --go-grpc_out=gen --go-grpc_opt=paths=source_relative \
  ../../protos/hivegrid/v1/*.proto
