"""A moto server whose sandbox cloud survives a restart: ``python -m proxy.embedded.moto_state``.

Theory of operation
-------------------
moto keeps its cloud in memory, in one ``BackendDict`` per AWS service (``moto.core.base_backend``);
the ones in use are listed in ``BackendDict._instances``. The installed moto (5.2) has no state
file of its own: its recorder (``/moto-api/recorder/``) logs every request, reads included, and
replays them all at start, which only gives the same resource ids when the seeded random numbers
are drawn in the same order, and takes longer with every day of use. This server saves the state
itself instead: the contents of every ``BackendDict`` in use and moto's random generator, pickled
into one file (``STATE_FORMAT``), and loaded back into moto's own module-level objects before the
first request. Ids, tags and objects come back exactly; the start takes as long whatever the
history.

- Requests run one at a time (one lock, the same one the snapshot takes), so a snapshot never
  sees a half-made change. A development sandbox does not need moto's concurrency.
- Every request but GET/HEAD/OPTIONS marks the state changed (EC2's and IAM's reads are POSTs,
  so they count too); the main thread writes a snapshot at most every ``SAVE_INTERVAL`` seconds
  when something changed, and a last one at SIGTERM/SIGINT. Writes go to a temporary file that
  replaces the old one (mode 0600), so a crash leaves the previous snapshot whole; a SIGKILL
  loses at most the last ``SAVE_INTERVAL`` seconds.
- Each service is pickled on its own, by ``StatePickler``: moto keeps locks (every SQS queue, the
  ECR backend), weak dictionaries and a local ``lambda`` (Lambda), and ``cryptography`` keys and
  certificates (ACM) in its state, which plain pickle refuses; they are written as fresh locks,
  plain entries, a place in moto's code and PEM. SSM's parameters live in a ``defaultdict``
  subclass whose ``__init__`` takes an account and a region: pickle writes it, but its load
  calls ``ParameterDict(list)`` and fails; it is written as an instance made without ``__init__``. A service that still cannot be pickled is left
  out, the others saved, and a warning naming it goes to stderr and to ``--warn-fd`` (the
  development stack's own stderr), once.
- The file records moto's version: another version's pickle could load into classes whose fields
  changed, so it is refused (exit status ``EXIT_STATE``, the reason on stderr) rather than half
  restored. A pickle runs code when loaded: the file is only read from the development stack's own
  state directory, written by this process.

Run as ``python -m proxy.embedded.moto_state --state FILE [-H HOST] [-p PORT] [--warn-fd FD]``
(``proxy.embedded.moto.MotoServer`` with ``state_file`` set does this).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import io
import os
import pickle
import signal
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

#: Version of the snapshot's layout (a dict with these keys: format, moto, random, backends).
STATE_FORMAT = 2  # 2: each service pickled on its own
#: Seconds between snapshots while requests keep changing the state: short enough that a killed
#: stack loses little, long enough that a burst of requests costs one write.
SAVE_INTERVAL = 0.5
#: Exit status when the saved state cannot be restored (distinct from argparse's 2 and a crash's 1).
EXIT_STATE = 3
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class StateError(RuntimeError):
    """The state file exists but cannot be restored (unreadable, another format or moto version)."""


#: Services whose state could not be pickled (``(module, attribute)`` -> the reason), each
#: reported once (``warn``); ``snapshot`` leaves them out and saves the others.
UNSAVED: dict[tuple[str, str], str] = {}
#: Where ``warn`` writes besides stderr: the starting process's stderr (``--warn-fd``), or None.
WARN_STREAM: Any = None

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading._PyRLock)  # type: ignore[attr-defined]
_WEAK_MAPPINGS = (weakref.WeakValueDictionary, weakref.WeakKeyDictionary)


def warn(message: str) -> None:
    """Print ``message`` (one line) on stderr, which is moto's log, and, prefixed ``warning:``, on
    ``WARN_STREAM`` when set, where the user of the development stack sees it. Returns None;
    raises nothing for a closed ``WARN_STREAM``."""
    print(message, file=sys.stderr, flush=True)
    if WARN_STREAM is not None:
        try:
            print(f"warning: {message}", file=WARN_STREAM, flush=True)
        except (OSError, ValueError):
            pass


def _new_lock(reentrant: bool) -> Any:
    """A new, unlocked ``RLock`` (``reentrant``) or ``Lock``."""
    return threading.RLock() if reentrant else threading.Lock()


def _local_function(module: str, qualname: str, index: int) -> types.FunctionType:
    """The function defined (without closure) inside ``module``'s ``qualname`` at ``index`` among the
    code constants of the enclosing function (``StatePickler`` pickles such functions by place)."""
    outer_name, _, _ = qualname.rpartition(".<locals>.")
    outer: Any = importlib.import_module(module)
    for part in outer_name.split("."):
        outer = getattr(outer, part)
    code = [c for c in getattr(outer, "__func__", outer).__code__.co_consts if isinstance(c, types.CodeType)][index]
    fn = types.FunctionType(code, vars(importlib.import_module(module)), code.co_name)
    fn.__qualname__ = qualname
    return fn


def _place_of_local_function(fn: types.FunctionType) -> tuple[str, str, int] | None:
    """``(module, qualname, index)`` for ``_local_function``, or None when ``fn`` cannot be found
    again that way (a closure, default arguments, an enclosing function that is itself local)."""
    outer_name, sep, _ = fn.__qualname__.rpartition(".<locals>.")
    if not sep or "<locals>" in outer_name or fn.__closure__ or fn.__defaults__ or fn.__kwdefaults__:
        return None
    outer: Any = sys.modules.get(fn.__module__)
    for part in outer_name.split("."):
        outer = getattr(outer, part, None)
    code = getattr(getattr(outer, "__func__", outer), "__code__", None)
    if code is None:
        return None
    consts = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    for index, const in enumerate(consts):
        if const is fn.__code__:
            return fn.__module__, fn.__qualname__, index
    return None


def _new_defaultdict(cls: type, default_factory: Any) -> Any:
    """An empty ``defaultdict`` subclass ``cls`` instance with ``default_factory``, made without
    calling ``cls.__init__`` (``StatePickler`` then restores its attributes and entries).

    Args:
        cls: a subclass of ``collections.defaultdict``.
        default_factory: the factory for missing keys (None for none).

    Returns:
        The new, empty instance.
    """
    obj = cls.__new__(cls)
    obj.default_factory = default_factory
    return obj


def _crypto_reducer(obj: Any) -> tuple | None:
    """The reduce tuple for a key or certificate of the ``cryptography`` package (ACM keeps them):
    its PEM, loaded back by ``_from_pem``; None for any other object."""
    mod = type(obj).__module__
    if not mod.startswith("cryptography."):
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

    private = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, dsa.DSAPrivateKey, ed25519.Ed25519PrivateKey,
               ed448.Ed448PrivateKey, x25519.X25519PrivateKey, x448.X448PrivateKey)
    public = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey, ed25519.Ed25519PublicKey,
              ed448.Ed448PublicKey, x25519.X25519PublicKey, x448.X448PublicKey)
    pem = ser.Encoding.PEM
    if isinstance(obj, private):
        return _from_pem, ("private", obj.private_bytes(pem, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    if isinstance(obj, public):
        return _from_pem, ("public", obj.public_bytes(pem, ser.PublicFormat.SubjectPublicKeyInfo))
    if isinstance(obj, x509.Certificate):
        return _from_pem, ("certificate", obj.public_bytes(pem))
    if isinstance(obj, x509.CertificateSigningRequest):
        return _from_pem, ("csr", obj.public_bytes(pem))
    return None


def _from_pem(kind: str, data: bytes) -> Any:
    """The ``cryptography`` object ``_crypto_reducer`` wrote (its loaders live in a Rust module that
    pickle cannot name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    loaders = {"private": lambda d: ser.load_pem_private_key(d, None), "public": ser.load_pem_public_key,
               "certificate": x509.load_pem_x509_certificate, "csr": x509.load_pem_x509_csr}
    return loaders[kind](data)


class StatePickler(pickle.Pickler):
    """A Pickler for moto's service state, which holds a few things plain pickle refuses.

    Takes what ``pickle.Pickler`` takes. Besides what pickle knows, it writes: a lock (``Lock``,
    ``RLock``) as a new, unlocked lock of the same kind, and a ``Condition`` as a new condition
    around a new lock (``Event``, ``Semaphore`` and ``Barrier`` follow, their counters kept), which
    is right for a snapshot taken while no request runs; a ``WeakValueDictionary``,
    ``WeakKeyDictionary`` or ``WeakSet`` as the same kind with the entries alive now; a function
    defined (without closure or defaults) inside another, such as the ``lambda`` of a
    ``defaultdict``, by its place in moto's code; a subclass of ``defaultdict`` (SSM's
    ``ParameterDict``, whose ``__init__`` takes other arguments than the factory) as a new instance
    made without its ``__init__``, with its factory, attributes and entries; and a ``cryptography``
    key or certificate as PEM. Anything else pickle refuses still raises what pickle raises (PicklingError, TypeError,
    AttributeError).
    """

    def reducer_override(self, obj: Any) -> Any:
        """The reduce tuple for the objects listed in the class docstring; NotImplemented for
        everything else (pickle's own rules)."""
        kind = type(obj)
        if kind in _LOCK_TYPES:
            return _new_lock, (kind is not _LOCK_TYPES[0],)
        if kind is threading.Condition:
            return threading.Condition, (obj._lock,)  # type: ignore[attr-defined]
        if kind in _WEAK_MAPPINGS:
            return kind, (dict(obj),)
        if kind is weakref.WeakSet:
            return kind, (list(obj),)
        if kind is not collections.defaultdict and isinstance(obj, collections.defaultdict):
            # defaultdict's own reduce calls ``kind(default_factory)`` at load time, which a subclass
            # whose __init__ takes other arguments refuses (SSM's ParameterDict(account_id,
            # region_name): "TypeError: __init__() missing ... 'region_name'")
            return (_new_defaultdict, (kind, obj.default_factory), getattr(obj, "__dict__", None) or None,
                    None, iter(obj.items()))
        if kind is types.FunctionType and "<locals>" in obj.__qualname__:
            place = _place_of_local_function(obj)
            return (_local_function, place) if place is not None else NotImplemented
        reduced = _crypto_reducer(obj)
        return reduced if reduced is not None else NotImplemented


def dumps(obj: Any) -> bytes:
    """``obj`` pickled with ``StatePickler`` (highest protocol); loaded back by ``pickle.loads``.

    Raises what ``StatePickler`` raises for an object it cannot write.
    """
    buf = io.BytesIO()
    StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _backend_dicts() -> list[Any]:
    from moto.core.base_backend import BackendDict

    return list(BackendDict._instances)


def _locate(bd: Any, cache: dict[int, tuple[str, str]]) -> tuple[str, str] | None:
    """``(module, attribute)`` of moto's module-level ``BackendDict`` ``bd``, or None."""
    found = cache.get(id(bd))
    if found is not None:
        return found
    first = getattr(bd.backend, "__module__", "")
    names = [first] + [m for m in list(sys.modules) if m.startswith("moto.") and m != first]
    for name in names:
        module = sys.modules.get(name)
        for attr, value in list(vars(module).items()) if module is not None else ():
            if value is bd:
                cache[id(bd)] = (name, attr)
                return name, attr
    return None


def snapshot(cache: dict[int, tuple[str, str]] | None = None) -> bytes:
    """The pickled state of every moto service in use, and moto's random generator.

    Takes: ``cache``, a dict this function fills with where each ``BackendDict`` lives (pass the
    same one each time to skip the search). Returns the bytes to write. Each service is pickled
    with ``StatePickler`` (moto keeps locks, weak references and keys in some services' state); a
    service whose state still cannot be pickled is left out and named once by ``warn``
    (``UNSAVED``), so the others are still saved.
    """
    import moto
    from moto.moto_api._internal import mock_random

    cache = {} if cache is None else cache
    backends = {}
    for bd in _backend_dicts():
        where = _locate(bd, cache)
        if where is None:
            continue
        try:  # one service at a time: one that holds something unpicklable never stops the rest
            backends[where] = dumps(dict(bd))
        except Exception as e:  # pickle raises many kinds (TypeError, AttributeError, ...)
            if where not in UNSAVED:
                UNSAVED[where] = f"{type(e).__name__}: {e}"
                warn(f"sandbox cloud: the {getattr(bd, 'service_name', where[1])} service is not saved "
                     f"({where[0]}.{where[1]}: {UNSAVED[where]}): its resources will be gone after a "
                     "restart; the other services are saved")
    state = {"format": STATE_FORMAT, "moto": moto.__version__, "random": mock_random.getstate(),
             "backends": backends}
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def restore(data: bytes) -> int:
    """Load a ``snapshot()`` into moto's own module-level objects, before any request.

    Takes the bytes ``snapshot()`` returned. Returns the number of services restored. Raises
    StateError when the bytes are not a snapshot of this format written by this moto version.
    """
    import moto
    from moto.core.base_backend import BackendDict, backend_lock
    from moto.moto_api._internal import mock_random

    try:
        state = pickle.loads(data)
    except Exception as e:  # a truncated or foreign file: pickle raises many kinds
        raise StateError(f"not a saved sandbox cloud ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") not in (1, STATE_FORMAT):  # 1: whole dicts
        raise StateError(f"unknown format {state.get('format') if isinstance(state, dict) else None!r}")
    if state.get("moto") != moto.__version__:
        raise StateError(f"saved by moto {state.get('moto')}, this is moto {moto.__version__}")
    with backend_lock:
        for (module, attr), pickled in state["backends"].items():
            try:
                accounts = pickle.loads(pickled) if isinstance(pickled, bytes) else pickled
            except Exception as e:  # one service's state that cannot be read: the others still are
                warn(f"sandbox cloud: service {module}.{attr} not restored ({type(e).__name__}: {e}); "
                     "it starts empty")
                continue
            live = getattr(importlib.import_module(module), attr)
            dict.clear(live)
            dict.update(live, accounts)
            if live not in BackendDict._instances:
                BackendDict._instances.append(live)
    mock_random.setstate(state["random"])
    return len(state["backends"])


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it), mode 0600.

    Raises OSError when the directory is not writable; the old file is then left as it was.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SavingApp:
    """WSGI middleware around moto's app: one request at a time, and a note of changes.

    Takes moto's WSGI application. ``lock`` is held by each request and by ``save``; ``dirty`` is
    set by every request whose method may change something.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app
        self.lock = threading.Lock()
        self.dirty = False
        self._where: dict[int, tuple[str, str]] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Serve one request under the lock (WSGI)."""
        with self.lock:
            if environ.get("REQUEST_METHOD", "GET") not in _READ_METHODS:
                self.dirty = True
            return self.app(environ, start_response)

    def save(self, path: Path, force: bool = False) -> bool:
        """Write a snapshot to ``path`` when something changed (or ``force``). Returns True when
        written. Raises what ``snapshot`` and ``write_private`` raise; the change stays noted, so
        the next call tries again."""
        with self.lock:
            if not (self.dirty or force):
                return False
            data = snapshot(self._where)
            self.dirty = False
        try:
            write_private(path, data)
        except OSError:
            self.dirty = True
            raise
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT. Returns the exit status (``EXIT_STATE`` when the state
    file cannot be restored; the reason is printed on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m proxy.embedded.moto_state")
    parser.add_argument("--state", required=True, type=Path, help="state file (created when missing)")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--warn-fd", type=int, default=None,
                        help="file descriptor that also gets the warnings (the starting process's stderr)")
    args = parser.parse_args(argv)
    global WARN_STREAM
    if args.warn_fd is not None:
        try:
            WARN_STREAM = os.fdopen(args.warn_fd, "w", buffering=1, errors="replace")
        except OSError as e:
            print(f"--warn-fd {args.warn_fd}: {e}", file=sys.stderr, flush=True)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(args.port))
    if args.state.exists():
        try:
            restore(args.state.read_bytes())
        except (StateError, OSError) as e:
            print(f"cannot restore the sandbox cloud from {args.state}: {e}", file=sys.stderr, flush=True)
            return EXIT_STATE
    app = SavingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    server.daemon_threads = True  # a client's idle keep-alive connection must not hold up the exit
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="moto-http", daemon=True)
    serving.start()
    try:
        while not stop.wait(SAVE_INTERVAL):
            try:
                app.save(args.state)
            except Exception as e:  # keep serving; the previous snapshot stays whole
                print(f"cannot save the sandbox cloud to {args.state}: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
    finally:
        server.shutdown()
        app.save(args.state, force=not args.state.exists())
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # the state is saved: skip the interpreter's teardown of moto's object graph (seconds of work)
    os._exit(status)
