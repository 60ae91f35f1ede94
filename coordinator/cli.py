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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

from hivegrid.client import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    Client,
    Event,
    GraphFileError,
    HivegridError,
    InvalidGraph,
    NodeState,
    NotFound,
    RunState,
    Unavailable,
)
from hivegrid.coordinator import render
from hivegrid.coordinator.graphfile import load_document

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

HOME_ENV = "HIVEGRID_HOME"

# A user waiting on an unreachable coordinator wants to know soon; a watch should outlive a
# coordinator's restart.
_SUBMIT_RETRY_S = 10.0
_RESUME_FOR_S = 30.0


class CliError(Exception):
    """Ends the command with `message` on stderr and exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --- the client -------------------------------------------------------------------------------


def _cli_error(exc: HivegridError, *, refused: str | None = None) -> CliError:
    """The CLI's line and exit code for a client error; `refused` prefixes what the
    coordinator found invalid (exit 2)."""
    if isinstance(exc, Unavailable):
        return CliError(str(exc), EXIT_UNREACHABLE)
    if isinstance(exc, GraphFileError):
        return CliError(str(exc), EXIT_USAGE)
    if isinstance(exc, InvalidGraph):
        prefix = f"{refused}: " if refused else ""
        return CliError(f"{prefix}{exc.details}", EXIT_USAGE)
    if isinstance(exc, NotFound):
        return CliError(exc.details, EXIT_FAILED)
    return CliError(f"{exc.code or 'error'}: {exc.details}", EXIT_FAILED)


@contextmanager
def _client(args: argparse.Namespace, *, refused: str | None = None) -> Iterator[Client]:
    """A client of the coordinator the command names; its errors end the command."""
    try:
        with Client(
            _address(args), submit_retry_s=_SUBMIT_RETRY_S, resume_s=_RESUME_FOR_S
        ) as client:
            yield client
    except HivegridError as exc:
        raise _cli_error(exc, refused=refused) from None


def _address(args: argparse.Namespace) -> str:
    address: str = args.coordinator or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    return address


def _run_exit_code(state: RunState) -> int:
    return EXIT_OK if state == RunState.SUCCEEDED else EXIT_FAILED


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


# --- client commands --------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args, refused="the coordinator refused the graph") as client:
        # The client reads the file (before connecting): a bad one is GraphFileError, exit 2.
        run_id = client.submit(args.file, name=args.name)
        if not args.wait:
            if args.json:
                _print_json(render.run_json(client.get_run(run_id)))
            else:
                print(run_id)
            return EXIT_OK
        if not args.json:
            print(run_id, flush=True)
        try:
            final = client.wait(run_id)
        except KeyboardInterrupt:
            raise CliError(
                f"interrupted; the run goes on (hivegrid watch {run_id})", EXIT_INTERRUPTED
            ) from None
    if args.json:
        _print_json(render.run_json(final))
    else:
        print(render.run_summary_line(final))
        failed = render.failed_nodes_text(final)
        if failed and final.state != RunState.SUCCEEDED:
            print(failed)
    return _run_exit_code(final.state)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.get_run(args.run)
    if args.json:
        _print_json(render.run_json(run))
    else:
        print(render.status_text(run))
    return EXIT_OK


class _LiveView:
    """What `hivegrid watch` shows: a line per event; counts on a refreshing line on a TTY."""

    def __init__(self, states: dict[str, NodeState], out: TextIO) -> None:
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

    def on_event(self, event: Event) -> None:
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
    with _client(args) as client:
        snapshot = client.get_run(args.run, results=False)
        print(render.run_summary_line(snapshot), flush=True)
        if snapshot.state == RunState.RUNNING:
            view = _LiveView({node.id: node.state for node in snapshot.nodes}, sys.stdout)
            events = client.events(args.run, after=snapshot.last_seq)
            try:
                for event in events:
                    view.on_event(event)
            except KeyboardInterrupt:
                view.close()
                return EXIT_INTERRUPTED
            finally:
                events.close()
            view.close()
            final = client.get_run(args.run, results=False)
            print(render.run_summary_line(final))
        else:
            final = snapshot
    failed = render.failed_nodes_text(final)
    if failed and final.state != RunState.SUCCEEDED:
        print(failed)
    return _run_exit_code(final.state)


def cmd_events(args: argparse.Namespace) -> int:
    if args.from_seq < 0:
        raise CliError("--from must be 0 or more", EXIT_USAGE)
    with _client(args) as client:
        # Without --follow, the events that existed when we asked.
        events = client.events(args.run, after=max(args.from_seq, 1) - 1, follow=args.follow)
        try:
            for event in events:
                if args.json:
                    print(json.dumps(render.event_json(event), ensure_ascii=False), flush=True)
                else:
                    print(render.event_line(event), flush=True)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            events.close()
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        state = client.cancel(args.run, reason=args.reason)
    print(f"run {args.run}: {state}")
    return EXIT_OK


def cmd_mutate(args: argparse.Namespace) -> int:
    try:
        document, source = load_document(args.file, what="mutations file")
    except GraphFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if isinstance(document, dict) and set(document) == {"mutations"}:
        document = document["mutations"]
    if not isinstance(document, list) or not document:
        raise CliError(
            f'{source}: expected a non-empty list of mutations (or {{"mutations": [...]}}), '
            'each like {"add_node": {"node": {"id": "x", "agent": "echo"}}}',
            EXIT_USAGE,
        )
    with _client(args, refused="the coordinator refused the mutations") as client:
        try:
            seq = client.mutate(args.run, document)
        except GraphFileError as exc:
            raise CliError(f"{source}: {exc}", EXIT_USAGE) from None
    plural = "" if len(document) == 1 else "s"
    print(f"run {args.run}: {len(document)} mutation{plural} applied (event #{seq})")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    if args.action == "delete":
        if not args.ids:
            raise CliError("hivegrid runs delete RUN [RUN ...]: name the runs", EXIT_USAGE)
        with _client(args) as client:
            for run_id in args.ids:
                client.delete_run(run_id)
                print(f"run {run_id}: deleted")
        return EXIT_OK
    if args.ids:
        raise CliError("hivegrid runs takes no run ids (did you mean 'runs delete'?)", EXIT_USAGE)
    if args.limit < 0:
        raise CliError("--limit must be 0 or more", EXIT_USAGE)
    with _client(args) as client:
        runs = client.list_runs(limit=args.limit or 100)
    if args.json:
        _print_json(render.runs_json(runs))
    else:
        print(render.runs_table(runs))
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        workers = client.list_workers()
    if args.json:
        _print_json(render.workers_json(workers))
    else:
        print(render.workers_table(workers))
    return EXIT_OK


def cmd_drain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        drained = client.drain(args.worker)
    if drained == 0:
        raise CliError(f"no connected worker has the name or session id {args.worker!r}")
    plural = "" if drained == 1 else "s"
    print(f"draining {drained} session{plural} of {args.worker}")
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
        help="a TOML file whose [limits] table sets limits (docs/limits.md lists them)",
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
        "mutate",
        cmd_mutate,
        "apply a batch of mutations to a running run, atomically (a JSON or YAML list; '-' "
        "reads stdin)",
        parents=[client],
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("file", metavar="FILE")

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
