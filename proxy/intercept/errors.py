"""What the client is told when an ``iasql_*`` call fails: ErrorResponse fields, built in one place.

``CallFailed`` carries the fields (by protocol field code) and the statements to run once the
caller's transaction has ended (``engine.after_failure``: the ERROR audit row, a commit's revert) from
wherever the call failed (its arguments, the engine, the rewrite of its rows) to the interceptor
that reports it (``simple``, ``extended``).
"""

from __future__ import annotations

from engine.rpc import EngineError, SqlError
from proxy.router.classify import CallError
from proxy.intercept.values import ValueError_
from proxy.wire import backend as B


class CallFailed(Exception):
    """A call failed: ``fields`` is the ErrorResponse for the client (field code -> value, the
    position relative to the statement), ``after`` the statements (SQL, parameters) to run as the
    caller once its transaction has ended (``engine.after_failure``; empty for none)."""

    def __init__(self, fields: dict[str, str], after: list[tuple[str, tuple]] | None = None):
        super().__init__(fields.get("M", ""))
        self.fields = fields
        self.after = list(after or ())


def engine_fields(err: EngineError) -> dict[str, str]:
    """The ErrorResponse fields for an engine failure: a failed engine statement keeps the
    server's fields but its position (which points into the engine's SQL, not the client's)."""
    if isinstance(err, SqlError):
        return {k: v for k, v in err.fields.items() if k not in ("P", "p", "q")}
    fields = {"S": "ERROR", "V": "ERROR", "C": err.sqlstate, "M": err.message}
    if err.detail:
        fields["D"] = err.detail
    if err.hint:
        fields["H"] = err.hint
    return fields


def call_error_fields(e: CallError | ValueError_) -> dict[str, str]:
    """The ErrorResponse fields of a call the proxy refuses (the client's SQL)."""
    fields = {"S": "ERROR", "V": "ERROR", "C": e.sqlstate, "M": e.message}
    if getattr(e, "hint", None):
        fields["H"] = e.hint
    if getattr(e, "position", None) is not None:
        fields["P"] = str(e.position + 1)
    return fields


def encode_error(fields: dict[str, str], offset: int = 0) -> bytes:
    """An ErrorResponse from ``fields``, its position moved by ``offset`` characters."""
    if offset and fields.get("P", "").isdigit():
        fields = {**fields, "P": str(int(fields["P"]) + offset)}
    return B.ErrorResponse(tuple(fields.items())).encode()



__all__ = ["CallFailed", "engine_fields", "call_error_fields", "encode_error"]
