/*
 * proxy.wire._fastpath: the relay's two per-read scans in C (optional; proxy/wire/fastpath.py has
 * the same functions in Python and is the reference: tests/unit/test_fastpath.py compares them).
 *
 * scan_client(data, txn, limit) -> int
 *     Whole frontend messages in `data` that the fast path may forward unchanged. Returns -1 when
 *     the slow path must look (a partial message, a bad length, a type Postgres does not read
 *     after login or a short type longer than 10,000 bytes, with `txn` a Parse not of
 *     PostgreSQL's shape, a Query or FunctionCall behind an extended message without a Sync
 *     between them, Terminate, CopyDone/CopyFail, a
 *     Query/Parse text containing iasql_ or a module RPC name at an identifier start (RPC_NAMES)
 *     or beginning with DROP or, with `txn`, text that may change session state, a
 *     named prepared statement with `txn`, or with `txn` a Bind/Describe of the unnamed statement
 *     that no unnamed Parse earlier in `data` defined, a Close of it, or an unnamed Parse that no
 *     Bind after it in `data` uses); else pending * 256 + type
 *     of the last message that is neither Flush nor CopyData ('H' when all are), where pending counts Query, Sync and
 *     FunctionCall (each owes a ReadyForQuery); with `txn`, plus UNNAMED_FLAGS << 31 when `data`
 *     changes the client's unnamed statement: bit 0 of the flags when a Query came after the last
 *     unnamed Parse (or with none: the statement is gone), else (offset of the last unnamed Parse
 *     + 1) << 1.
 *
 * scan_reply(data, watch, start=0) -> int
 *     Walks whole backend messages from offset `start` of `data` while their type is not watched
 *     (`watch`: 256 bytes, non-zero for a watched type). Returns the status byte (0..255) when
 *     `data` ends with a ReadyForQuery ('Z', length 5) that is the first watched message; else
 *     -1 - pos, where pos is the offset the caller's general scanner must continue from.
 *
 * Message format: PostgreSQL protocol chapter, "Message Formats" (Byte1 type, Int32 length that
 * counts itself). Keyword rules: proxy/router/session_state.py, may_change_state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static inline int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* case-insensitive: does s[i..e) start with the lower-case word w? */
static inline int starts(const unsigned char *s, Py_ssize_t i, Py_ssize_t e, const char *w, Py_ssize_t wl) {
    if (e - i < wl)
        return 0;
    for (Py_ssize_t k = 0; k < wl; k++)
        if (lower(s[i + k]) != (unsigned char)w[k])
            return 0;
    return 1;
}

static const char *START_WORDS[] = {"set", "start", "reset", "discard", "deallocate", "declare", "prepare",
                                    "listen", "load", "unlisten", "close", "begin", "explain", "execute", NULL};

/* The module RPC names the engine answers (lower case), fixed at build time: a Query/Parse text
 * with one of them at an identifier start goes to the slow path, as one with iasql_ does. Keep in
 * agreement with proxy/router/marker.py MODULE_RPC_NAMES (exported as RPC_NAMES; compared by
 * tests/unit/test_fastpath.py). */
static const char *RPC_NAMES[] = {"s3_upload_object", "access_key_request", "key_pair_request",
                                  "key_pair_import", "describe_ami", "certificate_request",
                                  "certificate_import", "set_user_password", "log_group_tail", "start_build",
                                  "confirm_subscription", NULL};

/* IDENT[c]: c continues an identifier (ASCII letter, '_', '$', a byte >= 0x80), so a name right
 * after it is not at an identifier start (digits count as a start: only false positives).
 * RPC_UNDERSCORE[k]: the offset of the first '_' in RPC_NAMES[k] (every name has one: checked
 * at import, else the module refuses to load and the Python scans are used). Filled by init_types. */
static unsigned char IDENT[256];

/* the offset of the first byte c in s[i..e), or -1 */
static inline Py_ssize_t find_byte(const unsigned char *s, Py_ssize_t i, Py_ssize_t e, unsigned char c) {
    if (i >= e)
        return -1;
    const unsigned char *p = memchr(s + i, c, (size_t)(e - i));
    return p == NULL ? -1 : (Py_ssize_t)(p - s);
}
static Py_ssize_t RPC_UNDERSCORE[sizeof RPC_NAMES / sizeof RPC_NAMES[0]];
static Py_ssize_t RPC_LEN[sizeof RPC_NAMES / sizeof RPC_NAMES[0]];

/* RPC_PAIR: one bit per (byte before, byte after) a name's first '_', lower case: a '_' of the
 * text whose neighbours are no such pair starts no name, so most '_' (created_at, user_id) cost
 * one table look instead of a comparison per name. 65536 bits. Filled by init_types. */
static unsigned char RPC_PAIR[256 * 256 / 8];
static inline int rpc_pair(unsigned char before, unsigned char after) {
    unsigned int k = ((unsigned int)lower(before) << 8) | lower(after);
    return RPC_PAIR[k >> 3] & (1u << (k & 7));
}

/* 1 when one of RPC_NAMES (any ASCII case) is in s[a..b) at an identifier start (s[a] counts as
 * one), us being the offset of the text's first '_': each name is looked for around every '_'
 * from there (memchr), as its own first '_'. text_stops calls it once, after its loop, only for a
 * text with a '_', so the prefilter adds nothing to the per-byte loop (a call inside it, even
 * never made, slowed every byte). */
static int rpc_names_in(const unsigned char *s, Py_ssize_t a, Py_ssize_t us, Py_ssize_t b) {
    for (Py_ssize_t i = us; i >= 0 && i < b; i = find_byte(s, i + 1, b, '_')) {
        /* every name has a byte on each side of its first '_' */
        if (i == a || i + 1 >= b || !rpc_pair(s[i - 1], s[i + 1]))
            continue;
        for (Py_ssize_t k = 0; RPC_NAMES[k] != NULL; k++) {
            Py_ssize_t st = i - RPC_UNDERSCORE[k];
            if (st >= a && (st == a || !IDENT[s[st - 1]]) && starts(s, st, b, RPC_NAMES[k], RPC_LEN[k]))
                return 1;
        }
    }
    return 0;
}

/* 1 when the text s[a..b) must go to the slow path: iasql_ anywhere, an RPC name at an
 * identifier start (s[a] counts as one; found from its first '_'); with txn, a state keyword at
 * the start, or anywhere: ';' followed by more text, comment openers, '&', visory, _config, mp */
static int text_stops(const unsigned char *s, Py_ssize_t a, Py_ssize_t b, int txn) {
    if (txn) {
        Py_ssize_t i = a;
        while (i < b && is_space(s[i]))
            i++;
        for (const char **w = START_WORDS; *w != NULL; w++)
            if (starts(s, i, b, *w, (Py_ssize_t)strlen(*w)))
                return 1;
    }
    Py_ssize_t us = -1;  /* the first '_' of the text */
    for (Py_ssize_t i = a; i < b; i++) {
        unsigned char c = lower(s[i]);
        switch (c) {
        case 'i':
            if (starts(s, i, b, "iasql_", 6))
                return 1;
            break;
        case ';':
            if (txn) {
                Py_ssize_t j = i + 1;
                while (j < b && is_space(s[j]))
                    j++;
                if (j < b)
                    return 1;
            }
            break;
        case '/':
            if (txn && i + 1 < b && s[i + 1] == '*')
                return 1;
            break;
        case '-':
            if (txn && i + 1 < b && s[i + 1] == '-')
                return 1;
            break;
        case '&':
            if (txn)
                return 1;
            break;
        case 'v':
            if (txn && starts(s, i, b, "visory", 6))
                return 1;
            break;
        case '_':
            if (us < 0)
                us = i;  /* module RPC names are looked for after the loop, from here */
            if (txn && starts(s, i, b, "_config", 7))
                return 1;
            break;
        case 'm':
            if (txn && i + 1 < b && lower(s[i + 1]) == 'p')
                return 1;
            break;
        default:
            break;
        }
    }
    return us >= 0 && rpc_names_in(s, a, us, b);
}

/* 1 when the Query text s[a..b) begins with COPY (after white space): it may start COPY FROM
 * STDIN, and then Postgres reads what the client sends behind it as copy input; with txn the
 * slow path holds that input until the server has answered (ReadyForQuery counting) */
static int starts_copy(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) {
    while (a < b && is_space(s[a]))
        a++;
    return starts(s, a, b, "copy", 4);
}

/* 1 when the text s[a..b) begins with DROP (after white space): it may be DROP DATABASE, before
 * which the slow path closes the proxy's own idle connections to that database */
static int starts_drop(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) {
    while (a < b && is_space(s[a]))
        a++;
    return starts(s, a, b, "drop", 4);
}

/* Message types Postgres reads after login (SocketBackend): 0 not a type, 1 at most
 * PQ_SMALL_MESSAGE_LIMIT bytes, 2 up to `limit`; filled by init_types. */
static unsigned char TYPES[256];
#define SMALL_MESSAGE_LIMIT 10000

static void init_types(void) {
    for (const char *c = "QFBPd"; *c; c++)
        TYPES[(unsigned char)*c] = 2;
    for (const char *c = "XCDEHScf"; *c; c++)
        TYPES[(unsigned char)*c] = 1;
    for (int c = 0; c < 256; c++)
        IDENT[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$' || c >= 0x80;
    for (Py_ssize_t k = 0; RPC_NAMES[k] != NULL; k++) {
        const char *u = strchr(RPC_NAMES[k], '_');
        RPC_UNDERSCORE[k] = u == NULL ? -1 : (Py_ssize_t)(u - RPC_NAMES[k]);
        RPC_LEN[k] = (Py_ssize_t)strlen(RPC_NAMES[k]);
        if (u != NULL && u > RPC_NAMES[k] && u[1] != '\0') {
            unsigned int p = ((unsigned int)(unsigned char)u[-1] << 8) | (unsigned char)u[1];
            RPC_PAIR[p >> 3] |= (unsigned char)(1u << (p & 7));
        }
    }
}

/* 0 when every RPC name has a '_' (rpc_around finds names by it) */
static int check_rpc_names(void) {
    for (Py_ssize_t k = 0; RPC_NAMES[k] != NULL; k++)
        if (RPC_UNDERSCORE[k] < 1 || RPC_NAMES[k][RPC_UNDERSCORE[k] + 1] == '\0')
            return -1;
    return 0;
}

/* 1 for the types of an extended batch that a Sync must close (Parse, Bind, Describe, Execute,
 * Close): a Query or FunctionCall behind one of them is skipped by Postgres when the batch failed
 * (it discards messages until Sync), so only the server can tell whether it owes a ReadyForQuery */
static inline int opens_batch(int t) {
    return t == 'P' || t == 'B' || t == 'D' || t == 'E' || t == 'C';
}

static inline Py_ssize_t find_nul(const unsigned char *s, Py_ssize_t a, Py_ssize_t e) {
    const unsigned char *p = memchr(s + a, 0, (size_t)(e - a));
    return p == NULL ? -1 : (Py_ssize_t)(p - s);
}

static inline long be32(const unsigned char *p) {
    return (long)(int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static PyObject *scan_client(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scan_client(data, txn, limit)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int txn = PyObject_IsTrue(args[1]);
    long long limit = PyLong_AsLongLong(args[2]);
    if (txn < 0 || (limit == -1 && PyErr_Occurred())) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *s = view.buf;
    Py_ssize_t n = view.len, pos = 0;
    long pending = 0;
    int t = -1, last = -1;
    long long result = -1;
    Py_ssize_t unnamed = -1;   /* offset of the last unnamed Parse (txn) */
    int query_after = 0;       /* a Query came after it (or with none) */
    int bound = 0;             /* a Bind of it came after it in this read */
    while (pos < n) {
        if (n - pos < 5)
            goto done;
        t = s[pos];
        long length = be32(s + pos + 1);
        if (length < 4 || length > limit || (Py_ssize_t)length > n - pos - 1)
            goto done;
        /* a type Postgres does not read after login, or a short type declaring a long body: the
         * slow path refuses it (never forwarded) */
        if (TYPES[t] == 0 || (TYPES[t] == 1 && length > SMALL_MESSAGE_LIMIT))
            goto done;
        /* a Flush with a body: Postgres fails it and skips to Sync (the slow path counts that) */
        if (t == 'H' && length != 4)
            goto done;
        Py_ssize_t end = pos + 1 + (Py_ssize_t)length;
        switch (t) {
        case 'Q':
            if (opens_batch(last))
                goto done;
            pending++;
            query_after = 1;
            if (text_stops(s, pos + 5, end - 1, txn) || (txn && starts_copy(s, pos + 5, end - 1))
                || starts_drop(s, pos + 5, end - 1))
                goto done;
            break;
        case 'P': {
            if (txn && (length < 5 || s[pos + 5] != 0))
                goto done;
            unnamed = pos;
            query_after = 0;
            bound = 0;
            Py_ssize_t a = find_nul(s, pos + 5, end);
            if (a < 0)
                goto done;
            a++;
            Py_ssize_t b = find_nul(s, a, end);
            if (b < 0 || text_stops(s, a, b, txn) || starts_drop(s, a, b))
                goto done;
            /* with txn, only a Parse of PostgreSQL's shape (count, that many OIDs, nothing after)
             * may become the client's unnamed statement here */
            if (txn && (end - b - 1 < 2 || end - b - 3 != 4 * (Py_ssize_t)((s[b + 1] << 8) | s[b + 2])))
                goto done;
            break;
        }
        case 'F':
            if (opens_batch(last))
                goto done;
            pending++;
            break;
        case 'S':
            pending++;
            break;
        case 'X':
        case 'c':
        case 'f':
            goto done;
        case 'B':
            if (txn) {
                Py_ssize_t nul = find_nul(s, pos + 5, end);
                if (nul < 0 || nul + 1 >= end || s[nul + 1] != 0)
                    goto done;
                if (unnamed < 0 || query_after)  /* the unnamed statement of an earlier read */
                    goto done;
                bound = 1;
            }
            break;
        case 'D':
        case 'C':
            if (txn && (end - pos < 7 || (s[pos + 5] == 'S' && s[pos + 6] != 0)))
                goto done;
            if (txn && s[pos + 5] == 'S' && (t == 'C' || unnamed < 0 || query_after))
                goto done;
            break;
        default:
            break;
        }
        if (t != 'H' && t != 'd')  /* neither Flush nor CopyData opens or closes a batch */
            last = t;
        pos = end;
    }
    /* an unnamed Parse nobody binds in the same read (pg8000: Parse, Sync; Bind later): the slow
     * path confirms it before it counts as the client's */
    if (txn && unnamed >= 0 && !query_after && !bound)
        goto done;
    result = pending * 256 + (last >= 0 ? last : 'H');
    if (txn && (query_after || unnamed >= 0))
        result |= (long long)(query_after ? 1 : ((long long)(unnamed + 1) << 1)) << 31;
done:
    PyBuffer_Release(&view);
    return PyLong_FromLongLong(result);
}

static PyObject *scan_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scan_reply(data, watch, start=0)");
        return NULL;
    }
    Py_ssize_t start = 0;
    if (nargs == 3) {
        start = PyLong_AsSsize_t(args[2]);
        if (start == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer view, wv;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &wv, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (wv.len != 256) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&wv);
        PyErr_SetString(PyExc_ValueError, "watch must be 256 bytes");
        return NULL;
    }
    const unsigned char *s = view.buf, *watch = wv.buf;
    Py_ssize_t n = view.len, pos = start;
    if (start < 0 || start > n) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&wv);
        PyErr_SetString(PyExc_ValueError, "start out of range");
        return NULL;
    }
    long result;
    for (;;) {
        if (n - pos < 5) {
            result = -1 - (long)pos;
            break;
        }
        unsigned char t = s[pos];
        long length = be32(s + pos + 1);
        if (watch[t]) {
            if (t == 'Z' && length == 5 && n - pos == 6)
                result = s[pos + 5];
            else
                result = -1 - (long)pos;
            break;
        }
        if (length < 4 || (Py_ssize_t)length >= n - pos - 1) {  /* bad, or reaches the end of data */
            result = -1 - (long)pos;
            break;
        }
        pos += 1 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    PyBuffer_Release(&wv);
    return PyLong_FromLong(result);
}

static PyMethodDef methods[] = {
    {"scan_client", (PyCFunction)(void (*)(void))scan_client, METH_FASTCALL,
     "scan_client(data, txn, limit) -> int: see proxy/wire/fastpath.py"},
    {"scan_reply", (PyCFunction)(void (*)(void))scan_reply, METH_FASTCALL,
     "scan_reply(data, watch, start=0) -> int: see proxy/wire/fastpath.py"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    init_types();
    if (check_rpc_names() < 0) {
        PyErr_SetString(PyExc_ImportError, "_fastpath: an RPC name has no '_'");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_ssize_t n = 0;
    while (RPC_NAMES[n] != NULL)
        n++;
    PyObject *names = PyTuple_New(n);
    if (names == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *v = PyUnicode_FromString(RPC_NAMES[k]);
        if (v == NULL) {
            Py_DECREF(names);
            Py_DECREF(m);
            return NULL;
        }
        PyTuple_SET_ITEM(names, k, v);
    }
    if (PyModule_AddObject(m, "RPC_NAMES", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
