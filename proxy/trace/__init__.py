"""Wire traces: record every client session as JSON Lines, replay a trace as a test.

``Recorder`` (proxy.trace.recorder) is what ``ProxyApp.new_recorder`` returns when ``record_dir``
is set: the session hands it raw bytes in both directions (after TLS) and the framing, decoding and
writing happen on one writer thread behind a bounded queue. ``replay`` (proxy.trace.replay) sends
a trace's frontend side to a proxy or Postgres and compares what comes back. The file format is
described in proxy.trace.format.
"""

from proxy.trace.recorder import Recorder

__all__ = ["Recorder"]
