# C types for proxy/wire/framing.py (Cython "augmenting .pxd"): RelayScanner becomes an extension
# type whose state the relay (proxy.relay.core) reads without dictionary lookups.

cdef class RelayScanner:
    cdef public object watch, on_message, _hdr, _cur, _table
    cdef public Py_ssize_t _skip, _cur_type, _cur_need

    cpdef int feed_ready(self, object data) except -2
    cpdef Py_ssize_t feed(self, object data, Py_ssize_t pos=*, bint stop_at_boundary=*) except -1
