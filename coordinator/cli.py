"""The `hivegrid` command: start a coordinator or a worker, submit and follow runs.

Wiring only: each command parses its arguments, makes one or two RunService calls, and hands
the answer to `render`. Nothing here decides anything about scheduling.

Exit codes: 0 success; 1 a run that did not succeed, or a request the coordinator refused;
2 a usage error or a bad graph file (also a graph the coordinator finds invalid); 3 the
coordinator could not be reached; 130 interrupted. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc

from hivegrid.coordinator import render
from hivegrid.coordinator.graphfile import GraphFileError, load_graph_file
from hivegrid.v1 import graph_pb2, run_pb2, run_pb2_grpc

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "HIVEGRID_COORDINATOR"
HOME_ENV = "HIVEGRID_HOME"

# Unary calls answer in milliseconds; this bounds a coordinator that accepts and then hangs.
_CALL_TIMEOUT_S = 30.0
# How long a broken watch keeps trying to resume before giving up on the coordinator.
_RESUME_FOR_S = 30.0
_MAX_MESSAGE_BYTES = 512 * 1024 * 1024


class CliError(Exception):
    """Ends the command with `message` on stderr and exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- the client -------------------------------------------------------------------------------


class Client:
    """One channel to the coordinator's RunService; turns gRPC failures into CliErrors."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ],
        )
        self.stub = run_pb2_grpc.RunServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def call(self, method: str, request: Any, *, refused: str | None = None) -> Any:
        """Makes a unary call; `refused` prefixes an INVALID_ARGUMENT message (exit 2)."""
        try:
            return getattr(self.stub, method)(request, timeout=_CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise self.translate(exc, refused=refused) from None

    def translate(self, exc: grpc.RpcError, *, refused: str | None = None) -> CliError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            return CliError(
                f"cannot reach the coordinator at {self.address}: {details}", EXIT_UNREACHABLE
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(
                f"the coordinator at {self.address} did not answer in time: {details}",
                EXIT_UNREACHABLE,
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            prefix = f"{refused}: " if refused else ""
            return CliError(f"{prefix}{details}", EXIT_USAGE)
        if code == grpc.StatusCode.NOT_FOUND:
            return CliError(details, EXIT_FAILED)
        return CliError(f"{code.name.lower()}: {details}", EXIT_FAILED)

    def events(self, run_id: str, from_seq: int) -> Generator[run_pb2.RunEvent]:
        """The run's events from `from_seq` until the server ends the stream (the run ended).

        A broken stream is resumed from the last seq + 1, so callers see each event once,
        in order. The caller may stop early: closing the generator cancels the call.
        """
        next_seq = max(from_seq, 1)
        failing_since: float | None = None
        backoff = 0.1
        while True:
            stream = self.stub.WatchRun(run_pb2.WatchRunRequest(run_id=run_id, from_seq=next_seq))
            try:
                for response in stream:
                    failing_since = None
                    for event in response.events:
                        if event.seq < next_seq:
                            continue  # a resumed stream repeating what we already have
                        next_seq = event.seq + 1
                        yield event
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise self.translate(exc) from None
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > _RESUME_FOR_S:
                    raise self.translate(exc) from None
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                stream.cancel()

    def wait_for_end(
        self,
        run_id: str,
        from_seq: int,
        on_event: Callable[[run_pb2.RunEvent], None] | None = None,
    ) -> None:
        """Follows the run's events (no polling) until its RunEnded event."""
        next_seq = from_seq
        while True:
            for event in self.events(run_id, next_seq):
                next_seq = event.seq + 1
                if on_event is not None:
                    on_event(event)
                if event.HasField("run_ended"):
                    return
            # The stream ended without a RunEnded event (a server shutting down cleanly):
            # trust the run's own state, and follow again if it still runs.
            run = self.get_run(run_id, omit_results=True).run
            if run.state != graph_pb2.RUN_STATE_RUNNING:
                return
            next_seq = max(next_seq, run.last_seq + 1)
            time.sleep(0.2)

    def get_run(self, run_id: str, *, omit_results: bool = False) -> run_pb2.GetRunResponse:
        """The run and all of its nodes (GetRun pages through them)."""
        whole = run_pb2.GetRunResponse()
        token = ""
        while True:
            page: run_pb2.GetRunResponse = self.call(
                "GetRun",
                run_pb2.GetRunRequest(
                    run_id=run_id, omit_results=omit_results, page_size=10_000, page_token=token
                ),
            )
            whole.run.CopyFrom(page.run)
            whole.nodes.extend(page.nodes)
            token = page.next_page_token
            if not token:
                return whole

    def submit(self, request: run_pb2.SubmitRunRequest) -> str:
        """Submits a run. Retried while the coordinator is unreachable for a moment: the
        request id makes a retry return the run the first attempt created, if it did."""
        if not request.request_id:
            request.request_id = uuid.uuid4().hex
        deadline = time.monotonic() + 10.0
        backoff = 0.1
        while True:
            try:
                response = self.stub.SubmitRun(request, timeout=_CALL_TIMEOUT_S)
                return str(response.run_id)
            except grpc.RpcError as exc:
                unavailable = isinstance(exc, grpc.Call) and exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not unavailable or time.monotonic() > deadline:
                    raise self.translate(exc, refused="the coordinator refused the graph") from None
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


def _address(args: argparse.Namespace) -> str:
    address: str = args.coordinator or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    return address


def _run_exit_code(state: int) -> int:
    return EXIT_OK if state == graph_pb2.RUN_STATE_SUCCEEDED else EXIT_FAILED


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


# --- client commands --------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        request = load_graph_file(args.file)
    except GraphFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.name is not None:
        request.name = args.name
    with Client(_address(args)) as client:
        run_id = client.submit(request)
        if not args.wait:
            if args.json:
                _print_json(render.run_json(client.get_run(run_id)))
            else:
                print(run_id)
            return EXIT_OK
        if not args.json:
            print(run_id, flush=True)
        try:
            client.wait_for_end(run_id, 1)
        except KeyboardInterrupt:
            raise CliError(
                f"interrupted; the run goes on (hivegrid watch {run_id})", EXIT_INTERRUPTED
            ) from None
        final = client.get_run(run_id)
    if args.json:
        _print_json(render.run_json(final))
    else:
        print(render.run_summary_line(final.run))
        failed = render.failed_nodes_text(final)
        if failed and final.run.state != graph_pb2.RUN_STATE_SUCCEEDED:
            print(failed)
    return _run_exit_code(final.run.state)


def cmd_status(args: argparse.Namespace) -> int:
    with Client(_address(args)) as client:
        response = client.get_run(args.run)
    if args.json:
        _print_json(render.run_json(response))
    else:
        print(render.status_text(response))
    return EXIT_OK


class _LiveView:
    """What `hivegrid watch` shows: a line per event; counts on a refreshing line on a TTY."""

    def __init__(self, states: dict[str, int], out: TextIO) -> None:
        self.states = states
        self.out = out
        self.tty = out.isatty()
        self._status_shown = False

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[K")
            self._status_shown = False

    def show_counts(self) -> None:
        line = render.counts_line(render.tally(self.states))
        if self.tty:
            self._clear_status()
            self.out.write(line)
            self._status_shown = True
        else:
            self.out.write(f"  = {line}\n")
        self.out.flush()

    def on_event(self, event: run_pb2.RunEvent) -> None:
        self._clear_status()
        self.out.write(render.event_line(event) + "\n")
        for move in event.transitions:
            self.states[move.node_id] = move.state
        if event.transitions or self.tty:
            self.show_counts()
        self.out.flush()

    def close(self) -> None:
        if self._status_shown:
            self.out.write("\n")
            self._status_shown = False
        self.out.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    with Client(_address(args)) as client:
        snapshot = client.get_run(args.run, omit_results=True)
        print(render.run_summary_line(snapshot.run), flush=True)
        if snapshot.run.state == graph_pb2.RUN_STATE_RUNNING:
            view = _LiveView({node.id: node.state for node in snapshot.nodes}, sys.stdout)
            try:
                client.wait_for_end(args.run, snapshot.run.last_seq + 1, view.on_event)
            except KeyboardInterrupt:
                view.close()
                return EXIT_INTERRUPTED
            view.close()
            final = client.get_run(args.run, omit_results=True)
            print(render.run_summary_line(final.run))
        else:
            final = snapshot
    failed = render.failed_nodes_text(final)
    if failed and final.run.state != graph_pb2.RUN_STATE_SUCCEEDED:
        print(failed)
    return _run_exit_code(final.run.state)


def cmd_events(args: argparse.Namespace) -> int:
    if args.from_seq < 0:
        raise CliError("--from must be 0 or more", EXIT_USAGE)
    with Client(_address(args)) as client:
        # Without --follow, stop at the last event that existed when we asked.
        last_seq = None if args.follow else client.get_run(args.run, omit_results=True).run.last_seq
        if last_seq is not None and max(args.from_seq, 1) > last_seq:
            return EXIT_OK
        events = client.events(args.run, args.from_seq)
        try:
            for event in events:
                if args.json:
                    print(json.dumps(render.event_json(event), ensure_ascii=False), flush=True)
                else:
                    print(render.event_line(event), flush=True)
                if last_seq is not None and event.seq >= last_seq:
                    break
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            events.close()
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with Client(_address(args)) as client:
        response = client.call(
            "CancelRun", run_pb2.CancelRunRequest(run_id=args.run, reason=args.reason)
        )
    print(f"run {args.run}: {render.run_state_name(response.state)}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    if args.action == "delete":
        if not args.ids:
            raise CliError("hivegrid runs delete RUN [RUN ...]: name the runs", EXIT_USAGE)
        with Client(_address(args)) as client:
            for run_id in args.ids:
                client.call("DeleteRun", run_pb2.DeleteRunRequest(run_id=run_id))
                print(f"run {run_id}: deleted")
        return EXIT_OK
    if args.ids:
        raise CliError("hivegrid runs takes no run ids (did you mean 'runs delete'?)", EXIT_USAGE)
    if args.limit < 0:
        raise CliError("--limit must be 0 or more", EXIT_USAGE)
    with Client(_address(args)) as client:
        runs: list[run_pb2.RunInfo] = []
        token = ""
        want = args.limit or 100
        while len(runs) < want:
            response = client.call(
                "ListRuns",
                run_pb2.ListRunsRequest(limit=min(1000, want - len(runs)), page_token=token),
            )
            runs.extend(response.runs)
            token = response.next_page_token
            if not token:
                break
    if args.json:
        _print_json(render.runs_json(runs))
    else:
        print(render.runs_table(runs))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with Client(_address(args)) as client:
        response = client.call("ListWorkers", run_pb2.ListWorkersRequest())
    if args.json:
        _print_json(render.workers_json(response.workers))
    else:
        print(render.workers_table(response.workers))
    return EXIT_OK


def cmd_drain(args: argparse.Namespace) -> int:
    with Client(_address(args)) as client:
        response = client.call("DrainWorker", run_pb2.DrainWorkerRequest(worker=args.worker))
    if response.drained == 0:
        raise CliError(f"no connected worker has the name or session id {args.worker!r}")
    plural = "" if response.drained == 1 else "s"
    print(f"draining {response.drained} session{plural} of {args.worker}")
    return EXIT_OK


# --- processes --------------------------------------------------------------------------------


def _check_listen(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise CliError(
            f"--listen {address!r}: expected HOST:PORT, e.g. 127.0.0.1:50051", EXIT_USAGE
        )


def cmd_coordinator(args: argparse.Namespace) -> int:
    _check_listen(args.listen)
    if args.heartbeat_interval <= 0:
        raise CliError("--heartbeat-interval must be more than 0", EXIT_USAGE)
    if args.session_timeout <= args.heartbeat_interval:
        raise CliError("--session-timeout must be longer than --heartbeat-interval", EXIT_USAGE)
    # Imported here: the client commands must not pay for (or depend on) the server.
    from hivegrid.coordinator.limits import LimitsError, load_limits
    from hivegrid.coordinator.server import run_coordinator

    overrides = list(args.limit or [])
    if args.retain is not None:
        overrides.append(f"retain_s={args.retain}")
    if args.retain_runs is not None:
        overrides.append(f"retain_runs={args.retain_runs}")
    try:
        limits = load_limits(Path(args.config) if args.config else None, overrides)
    except LimitsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        return int(
            run_coordinator(
                listen=args.listen,
                store_url=args.store,  # None: the default sqlite file
                heartbeat_interval_s=args.heartbeat_interval,
                session_timeout_s=args.session_timeout,
                limits=limits,
            )
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def cmd_backup(args: argparse.Namespace) -> int:
    from hivegrid.coordinator.store import StoreError, backup_sqlite, default_store_url

    url = args.store or default_store_url()
    if not url.startswith("sqlite://"):
        raise CliError(f"hivegrid backup copies a SQLite store; {url!r} is not one", EXIT_USAGE)
    path = url[len("sqlite://") :]
    while path.startswith("//"):
        path = path[1:]
    if not Path(path).exists():
        raise CliError(f"no store at {path}", EXIT_USAGE)
    try:
        backup_sqlite(path, args.path)
    except StoreError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    print(f"backed up {path} to {args.path}")
    return EXIT_OK


def _load_worker_object(target: str) -> Any:
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise CliError(f"{target!r}: expected MODULE:ATTRIBUTE, e.g. myagents:worker", EXIT_USAGE)
    # Like `python -m`: modules in the current directory are importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"no module named {module_name!r} (run from the directory that holds it, "
                "or install it)",
                EXIT_USAGE,
            ) from None
        raise CliError(f"importing {module_name!r} failed: {exc}", EXIT_FAILED) from None
    except Exception as exc:
        raise CliError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", EXIT_FAILED
        ) from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise CliError(
                f"{target!r}: {module_name!r} has no attribute {attr_path!r}", EXIT_USAGE
            )
        obj = getattr(obj, part)
    return obj


def cmd_worker(args: argparse.Namespace) -> int:
    if args.slots is not None and args.slots < 1:
        raise CliError("--slots must be at least 1", EXIT_USAGE)
    obj = _load_worker_object(args.target)
    try:
        from hivegrid.worker import CoordinatorRefusedError, Worker
    except ImportError as exc:
        raise CliError(f"the Python worker SDK is not available: {exc}", EXIT_FAILED) from None
    if not isinstance(obj, Worker):
        raise CliError(
            f"{args.target!r} is of type {type(obj).__name__}, not a worker.Worker "
            "(make one with worker.Worker(...) and register agents on it)",
            EXIT_USAGE,
        )
    if args.slots is not None:
        obj.slots = args.slots
    try:
        obj.run(coordinator=_address(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except CoordinatorRefusedError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except Exception as exc:
        # The SDK's own errors (a refusal, a bad address) say what to do; one line is enough.
        raise CliError(f"worker stopped: {type(exc).__name__}: {exc}", EXIT_FAILED) from None
    return EXIT_OK


# --- arguments --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"hivegrid: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hivegrid",
        description="Run live graphs of agent tasks on workers in any language.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    client = _Parser(add_help=False)
    client.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help=f"the coordinator's address (default: ${ADDRESS_ENV} or {DEFAULT_ADDRESS})",
    )

    def add(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help_text: str,
        *,
        parents: list[_Parser] | None = None,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, parents=parents or []
        )
        sub.set_defaults(handler=handler)
        return sub

    p = add("coordinator", cmd_coordinator, "run the coordinator daemon")
    p.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="address to serve on (port 0: any free port) (default: %(default)s)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="'memory' or 'sqlite:///PATH' (default: sqlite file hivegrid.db in "
        f"${HOME_ENV} or ~/.hivegrid)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="worker heartbeat interval in seconds (default: %(default)s)",
    )
    p.add_argument(
        "--session-timeout",
        type=float,
        default=6.0,
        metavar="S",
        help="a silent worker session ends after this many seconds (default: %(default)s)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file whose [limits] table sets limits (docs/operations.md lists them)",
    )
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="set one limit, e.g. max_message_bytes=16MiB (repeatable; overrides --config)",
    )
    p.add_argument(
        "--retain",
        metavar="DURATION",
        help="delete ended runs this long after they ended, e.g. 7d, 12h (0: keep; default 7d)",
    )
    p.add_argument(
        "--retain-runs",
        metavar="N",
        help="keep at most N ended runs, deleting the oldest (0: no cap; default 10000)",
    )

    p = add("backup", cmd_backup, "copy a SQLite store consistently, even while it is in use")
    p.add_argument("path", metavar="PATH", help="where to write the copy (must not exist)")
    p.add_argument(
        "--store",
        metavar="URL",
        help=f"the store to copy (default: hivegrid.db in ${HOME_ENV} or ~/.hivegrid)",
    )

    p = add("worker", cmd_worker, "run a Python worker (a worker.Worker object)", parents=[client])
    p.add_argument("target", metavar="MODULE:ATTR", help="where the worker.Worker object is")
    p.add_argument("--slots", type=int, metavar="N", help="agents to run at once")

    p = add(
        "submit",
        cmd_submit,
        "submit a graph file (JSON or YAML; '-' reads stdin)",
        parents=[client],
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--wait", action="store_true", help="wait for the run to end; exit 0 only if it succeeded"
    )
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.add_argument("--name", help="name the run (overrides the file's name)")

    p = add("status", cmd_status, "show a run and its nodes", parents=[client])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="print the run as JSON")

    p = add("watch", cmd_watch, "follow a run live until it ends", parents=[client])
    p.add_argument("run", metavar="RUN")

    p = add("events", cmd_events, "print a run's event log", parents=[client])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--from",
        dest="from_seq",
        type=int,
        default=1,
        metavar="SEQ",
        help="first sequence number to show (default: 1)",
    )
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until the run ends"
    )

    p = add("cancel", cmd_cancel, "cancel a run", parents=[client])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--reason", default="cancelled from the command line")

    p = add(
        "runs",
        cmd_runs,
        "list runs, newest first; 'runs delete RUN...' deletes ended runs",
        parents=[client],
    )
    p.add_argument("action", nargs="?", choices=["list", "delete"], default="list")
    p.add_argument("ids", nargs="*", metavar="RUN")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    p.add_argument("--json", action="store_true")

    p = add("workers", cmd_workers, "list connected worker sessions", parents=[client])
    p.add_argument("--json", action="store_true")

    p = add(
        "drain",
        cmd_drain,
        "drain a worker: it finishes its work, takes no more, and exits",
        parents=[client],
    )
    p.add_argument("worker", metavar="WORKER", help="a session id or a worker name")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CliError as exc:
        print(f"hivegrid: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `hivegrid events RUN | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
