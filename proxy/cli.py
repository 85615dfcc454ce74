"""The ``iasql-proxy`` command.

::

    iasql-proxy --config FILE            run the proxy (same as ``iasql-proxy run --config FILE``)
    iasql-proxy certs [--dir certs]      create the development CA and server certificate if missing
    iasql-proxy dev [--port 6432] [--state-dir .run]
                                         certs + embedded Postgres + moto + the proxy (``make run``)
    iasql-proxy init-db NAME [--dsn DSN] initialise database NAME for IaSQL (engine.local.init_db);
                                         NAME iasql_metadata (or --metadata): the metadata database
    iasql-proxy replay TRACE --dsn DSN   replay a wire trace and compare (proxy.trace.replay)

``--record-dir DIR`` (with ``run``/``--config``) writes one wire trace per client session to DIR,
overriding the file's ``record_dir``.

Exit status: 0 on a clean stop, 1 on a runtime failure, 2 on a usage or configuration error
(argparse's convention), with one line ``iasql-proxy: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from proxy.config import Config, ConfigError, load_config

PROG = "iasql-proxy"


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _serve(cfg: Config) -> int:
    """Run the proxy server until it stops; returns its exit status (2 when it cannot listen)."""
    try:
        from proxy.server import ListenError, run
    except ImportError as e:
        return _fail(f"the proxy server is not available ({e})", 1)
    try:
        return int(run(cfg) or 0)
    except ListenError as e:  # a busy port is the configuration's problem, not a crash
        return _fail(str(e.args[1] if len(e.args) > 1 else e), 2)


def cmd_run(args: argparse.Namespace) -> int:
    """``iasql-proxy [run] --config FILE``: load and validate the file, then serve."""
    if not args.config:
        return _fail("--config FILE is required (or use `iasql-proxy dev` for a development stack)", 2)
    try:
        cfg = load_config(args.config)
        if getattr(args, "record_dir", None):
            import dataclasses

            cfg = dataclasses.replace(cfg, record_dir=Path(args.record_dir))
        from proxy.tls import TLSContexts

        TLSContexts.build(cfg)  # certificate/key problems are configuration errors too
    except ConfigError as e:
        return _fail(f"configuration error: {e}", 2)
    return _serve(cfg)


def cmd_certs(args: argparse.Namespace) -> int:
    """``iasql-proxy certs [--dir DIR]``: create the development certificates when missing."""
    from proxy.certs import ensure_dev_certs

    try:
        ca, crt, key = ensure_dev_certs(Path(args.dir))
    except (OSError, ValueError) as e:
        return _fail(f"cannot create certificates in {args.dir}: {e}", 1)
    print(f"CA certificate:     {ca.absolute()}\nserver certificate: {crt.absolute()}\n"
          f"server key:         {key.absolute()}")
    return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    """``iasql-proxy dev``: the development stack of ``make run`` (see proxy/devstack.py)."""
    from proxy.devstack import DevStack, DevStackError
    from proxy.embedded.moto import MotoServerError, MotoStateError
    from proxy.embedded.postgres import EmbeddedPostgresError

    stack = DevStack(state_dir=Path(args.state_dir), certs_dir=Path(args.certs_dir), port=args.port,
                     server_tls_sslmode=args.server_tls_sslmode, with_moto=not args.no_moto,
                     http_port=args.http_port)
    # SIGTERM must unwind through `finally` (stopping Postgres and moto) like Ctrl-C does. The
    # server may install its own handlers while it runs; this one covers start-up and shutdown.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        try:
            cfg = stack.start()
        except (DevStackError, EmbeddedPostgresError, MotoServerError, ConfigError, OSError) as e:
            hint = ""
            if isinstance(e, MotoStateError):
                hint = (f" (the tables in {stack.state_dir} describe that cloud: install the moto version"
                        f" that saved it, or remove {stack.state_dir} to start afresh)")
            elif isinstance(e, MotoServerError):
                hint = " (install the sandbox extra: pip install -e '.[sandbox]', or pass --no-moto)"
            return _fail(f"development stack failed to start: {e}{hint}", 1)
        stack.apply_aws_environment()
        assert stack.pg is not None
        print(f"Postgres   127.0.0.1:{stack.pg.port}  (data {stack.pg.data_dir}, log {stack.state_dir / 'postgres.log'})")
        if stack.moto is not None:
            print(f"AWS (moto) {stack.moto.endpoint_url}  ({stack.cloud_note})")
        print(f"config     {stack.config_path}")
        print(f"proxy      {cfg.listen_addr}:{cfg.listen_port}  (TLS required, SCRAM-SHA-256)")
        if stack.http_port:
            print(f"console    {stack.console_url()}  (log in as {stack.user} with the password below; "
                  f"CA {stack.ca_file})")
        else:
            print("console    on a free port: its URL is printed when the proxy listens")
        print("\nConnect with:\n\n    " + stack.psql_command() + "\n", flush=True)
        if args.services_only:
            print("--services-only: not starting the proxy; Ctrl-C stops the services.", flush=True)
            signal.pause()
            return 0
        return _serve(cfg)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def _dev_dsn(state_dir: Path, name: str) -> str | None:
    """A superuser DSN for database ``name`` on the running dev stack's Postgres, or None."""
    from proxy.devstack import read_state

    state = read_state(state_dir)
    if not state or not state.get("postgres_port"):
        return None
    return (f"host=127.0.0.1 port={state['postgres_port']} user=postgres "
            f"password={state['postgres_password']} dbname={name} sslmode=disable")


def _ensure_database(dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = "postgres"
    with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def cmd_init_db(args: argparse.Namespace) -> int:
    """``iasql-proxy init-db NAME [--dsn DSN]``: create NAME if needed and run ``engine.local.init_db``.

    Without ``--dsn`` the running dev stack's Postgres (from ``--state-dir``) is used as the
    superuser. A ``--dsn`` without ``dbname`` gets ``dbname=NAME``. NAME ``iasql_metadata`` (or
    ``--metadata``) creates the metadata database of scale out (``proxy.routing.initdb``) instead,
    connecting as the DSN's user to its ``dbname`` (``postgres`` when it names NAME or none).
    """
    try:
        from engine.local import init_db  # type: ignore[attr-defined]
    except ImportError as e:
        return _fail(f"init-db needs the IaSQL engine, which is not available here ({e})", 1)
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = args.dsn or _dev_dsn(Path(args.state_dir), args.name)
    if dsn is None:
        return _fail(f"no --dsn given and no running dev stack in {args.state_dir} (start `iasql-proxy dev`)", 2)
    try:
        params = conninfo_to_dict(dsn)
    except Exception as e:  # psycopg.ProgrammingError for a malformed DSN
        return _fail(f"bad --dsn: {e}", 2)
    if args.metadata or args.name == "iasql_metadata":  # scale out (issue 19): the metadata database
        from proxy.routing.initdb import init_metadata

        if params.get("dbname") in (None, args.name):  # the admin connection's own database
            params["dbname"] = "postgres"
        try:
            made = init_metadata(make_conninfo(**params), args.name)
        except Exception as e:
            return _fail(f"init-db {args.name} failed: {e}", 1)
        print(f"initialised the metadata database {args.name}{' (created)' if made else ''}")
        return 0
    params.setdefault("dbname", args.name)
    dsn = make_conninfo(**params)
    try:
        _ensure_database(dsn, params["dbname"])
        result = init_db(dsn)
        if inspect.isawaitable(result):
            asyncio.run(result)  # type: ignore[arg-type]
    except Exception as e:
        return _fail(f"init-db {params['dbname']} failed: {e}", 1)
    print(f"initialised {params['dbname']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """``iasql-proxy replay TRACE --dsn DSN``: 0 when the replies match the trace, 1 with a diff
    (or when the connection or login fails), 2 for a file that is not a usable trace or a trace
    holding a message redacted because it may carry an AWS secret (the message names its index)."""
    from proxy.trace.replay import ReplayError, SecretRedactedError, TraceFormatError, replay

    try:
        result = replay(args.trace, args.dsn, timeout=args.timeout, cancel_delay_max=args.cancel_delay_max)
    except SecretRedactedError as e:
        return _fail(f"cannot replay {args.trace}: {e}", 2)
    except TraceFormatError as e:
        return _fail(f"bad trace {args.trace}: {e}", 2)
    except ReplayError as e:
        return _fail(f"replay of {args.trace} failed: {e}", 1)
    if result.diff is not None:
        print(result.diff)
        return 1
    print(f"{args.trace}: {result.summary()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for ``iasql-proxy`` (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog=PROG, description="PostgreSQL wire-protocol proxy for IaSQL.")
    parser.add_argument("--config", metavar="FILE", help="ini configuration file (PgBouncer key names)")
    parser.add_argument("--record-dir", metavar="DIR",
                        help="write a wire trace of every client session to DIR (overrides record_dir)")
    parser.set_defaults(func=cmd_run)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the proxy with a configuration file")
    # SUPPRESS: given before or after ``run``, the option counts (cmd_run reports it missing)
    run.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="ini configuration file")
    run.add_argument("--record-dir", metavar="DIR", default=argparse.SUPPRESS,
                     help="write a wire trace of every client session to DIR (overrides record_dir)")
    run.set_defaults(func=cmd_run)

    certs = sub.add_parser("certs", help="create development certificates when missing")
    certs.add_argument("--dir", default="certs", help="directory (default: certs)")
    certs.set_defaults(func=cmd_certs)

    dev = sub.add_parser("dev", help="development stack: certs, embedded Postgres, moto and the proxy")
    dev.add_argument("--port", type=int, default=6432, help="proxy listen port (default: 6432)")
    dev.add_argument("--state-dir", default=".run", help="data directory, credentials, config (default: .run)")
    dev.add_argument("--certs-dir", default="certs", help="certificate directory (default: certs)")
    dev.add_argument("--server-tls-sslmode", default="verify-full",
                     choices=("disable", "prefer", "require", "verify-ca", "verify-full"),
                     help="TLS from the proxy to the embedded Postgres (default: verify-full)")
    dev.add_argument("--no-moto", action="store_true", help="do not start the moto AWS sandbox")
    dev.add_argument("--http-port", type=int, default=None,
                     help="web console port (default: --port + 2000 when free; 0: any free port)")
    dev.add_argument("--services-only", action="store_true",
                     help="start Postgres and moto and write the config, but not the proxy")
    dev.set_defaults(func=cmd_dev)

    init = sub.add_parser("init-db", help="initialise a database for IaSQL")
    init.add_argument("name", metavar="NAME", help="database name")
    init.add_argument("--dsn", help="libpq connection string (default: the running dev stack's Postgres)")
    init.add_argument("--state-dir", default=".run", help="dev stack state directory (default: .run)")
    init.add_argument("--metadata", action="store_true",
                      help="NAME is the metadata database of [servers] (implied by the name iasql_metadata)")
    init.set_defaults(func=cmd_init_db)

    rep = sub.add_parser("replay", help="replay a wire trace against a proxy or Postgres and compare the replies")
    rep.add_argument("trace", metavar="TRACE", help="a .jsonl trace written with record_dir / --record-dir")
    rep.add_argument("--dsn", required=True,
                     help="libpq connection string: host, port, user, password, dbname, sslmode (sslrootcert)")
    rep.add_argument("--timeout", type=float, default=30.0,
                     help="seconds to wait for each expected reply (default: 30)")
    rep.add_argument("--cancel-delay-max", type=float, default=2.0,
                     help="longest wait before a recorded CancelRequest is sent (default: 2 s)")
    rep.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iasql-proxy`` console script. Returns the exit status.

    The long-running commands (``run``, ``dev``) start the interpreter again, in the same process
    (``os.execv``, same pid), with ``PYTHONMALLOC=malloc`` unless that variable is already set:
    with the C allocator for Python objects too, memory freed after a crowd of clients leaves goes
    back to the system (``proxy.memory``); CPython's own small-object arenas stay fragmented.
    """
    args = build_parser().parse_args(argv)
    if argv is None and args.func in (cmd_run, cmd_dev) and "PYTHONMALLOC" not in os.environ:
        os.environ["PYTHONMALLOC"] = "malloc"
        sys.stdout.flush()
        sys.stderr.flush()
        # -P: the current directory is not put on the import path (it could shadow the proxy)
        os.execv(sys.executable, [sys.executable, "-P", "-m", "proxy.cli", *sys.argv[1:]])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
