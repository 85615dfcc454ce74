"""A fuzz campaign against the proxy (issue 16, "Fuzz campaign").

``tests.fuzz.campaign`` drives raw sockets through a proxy in transaction pooling: seeded,
generated inputs (malformed, truncated and garbage messages of every frontend type, bad lengths,
unknown types, valid traffic that opens transactions, COPY, LISTEN, prepared statements, then the
client vanishing in any of these states) run from several threads at once, while "good" clients
run queries whose answers they know. After each batch it checks what a user would check: a fresh
client is answered, SHOW POOLS returns to idle, the proxy's log has no traceback, its memory stays
bounded, and every good client received exactly its own results.

``make test`` runs a short campaign (``test_fuzz.py``); ``make fuzz N=1000000`` the long one
(``python -m tests.fuzz``), which writes its result to ``tests/fuzz/last_run.json`` (quoted in the
README).
"""
