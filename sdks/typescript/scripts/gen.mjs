// Regenerates src/gen/ from protos/hivegrid/v1/worker.proto and run.proto (and graph.proto, which
// they import) with ts-proto: `npm run gen`. The worker SDK speaks the worker protocol, the Client
// the RunService; storage.proto (coordinator-internal) is left out. The output depends only on
// the pinned ts-proto and the grpc_tools protoc of the repository's venv, so CI can regenerate
// and diff to catch drift. PY overrides the Python that runs grpc_tools.protoc.
import { spawnSync } from "node:child_process";
import { mkdtempSync, renameSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const protoRoot = resolve(pkg, "../../protos");
const out = join(pkg, "src/gen");
const python = process.env.PY ?? resolve(pkg, "../../.venv/bin/python");
const plugin = join(pkg, "node_modules/ts-proto/protoc-gen-ts_proto");

const options = [
  "outputServices=grpc-js",
  "esModuleInterop=true",
  "forceLong=bigint",
  "oneof=unions",
  "env=node",
  "outputJsonMethods=false",
  "useExactTypes=false",
  "fileSuffix=",
].join(",");

const protos = ["hivegrid/v1/worker.proto", "hivegrid/v1/run.proto"];

// Generate aside and swap in only on success, so a failed run leaves the old output intact.
const staging = mkdtempSync(join(pkg, ".gen-"));
const result = spawnSync(
  python,
  [
    "-m",
    "grpc_tools.protoc",
    `-I${protoRoot}`,
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${staging}`,
    `--ts_proto_opt=${options}`,
    ...protos,
  ],
  { cwd: protoRoot, stdio: "inherit" },
);
if (result.error || result.status !== 0) {
  rmSync(staging, { recursive: true, force: true });
  if (result.error)
    console.error(`gen: cannot run ${python}: ${result.error.message} (set PY to a Python with grpcio-tools)`);
  process.exit(1);
}
rmSync(out, { recursive: true, force: true });
renameSync(staging, out);
