# C types for proxy/relay/core.py (Cython "augmenting .pxd"): the attributes of the three base
# classes become C fields, so the per-transaction path reads them without dictionary lookups.
# Python code sees every attribute as before (``public``). The ``cdef`` methods are the path's
# internal steps: callable from Python only when this module runs uncompiled, so Python code
# calls their ``def`` entry points (``_relay_fast``, ``_lease_now``, ``_queue_now``,
# ``server_granted``, ``server_ready``, ``_wake_one``).
cimport cython
from proxy.wire.framing cimport RelayScanner

cdef Py_ssize_t _H, _Q, _F
cdef bytes _EXTENDED_TABLE, _OPEN_TABLE

cdef class PoolCore
cdef class ServerCore
cdef class ClientCore


cdef class PoolCore:
    cdef public list idle
    cdef public set active
    cdef public object waiters, queued
    cdef public bint closed
    cdef public double lifetime
    cdef public Py_ssize_t size, opening

    @cython.locals(conn=ServerCore, i=Py_ssize_t, n=Py_ssize_t)
    cdef ServerCore take_idle(self, object startup_key)
    cdef put_back(self, ServerCore conn)
    cdef queue(self, ClientCore session)
    @cython.locals(session=ClientCore)
    cdef _wake(self)
    @cython.locals(now=double)
    cdef give_back(self, ServerCore conn)


cdef class ServerCore:
    cdef public ClientCore client
    cdef public object transport, status, startup_key, gucs, custom_seen, _inbox, pool
    cdef public RelayScanner _scanner
    cdef public bint closed, broken, _paused_client, skipping
    cdef public double created, last_used

    @cython.locals(client=ClientCore, status=int)
    cpdef data_received(self, object data)


cdef class ClientCore:
    cdef public object app, transport, recorder, _busy, special, special_default, _inbuf
    cdef public object tx_status, _drained, _startup_key, gucs, pins, touched_gucs
    cdef public object wait_started, _checked, pool_mode, after_ready, _unnamed
    cdef public ServerCore server
    cdef public PoolCore pool
    cdef public bint ready, closed, pooled, _eof, reset_all_pending, _unnamed_here
    cdef public Py_ssize_t _passthrough, max_message, pending_ready, _last_type
    cdef public long long bytes_in, bytes_out, queries, transactions, assignments

    @cython.locals(r=cython.longlong, flags=cython.longlong, pending=Py_ssize_t, t=Py_ssize_t, server=ServerCore)
    cdef bint _fast(self, object data) except -1
    @cython.locals(start=Py_ssize_t, length=Py_ssize_t)
    cdef _unnamed_sent(self, object data, long long flags)
    cdef _send_checked(self, ServerCore server, object data, Py_ssize_t pending, Py_ssize_t last)
    @cython.locals(pool=PoolCore, server=ServerCore)
    cdef bint _take_server(self) except -1
    @cython.locals(pool=PoolCore)
    cdef bint _enqueue(self) except -1
    @cython.locals(buf=bytearray)
    cdef bint _granted(self) except -1
    @cython.locals(pending=Py_ssize_t, idle=bint, server=ServerCore)
    cdef _ready(self, object status)
    cdef bint _may_give_back_now(self) except -1
