"""A separate OS process running engine calls, for the concurrency and crash tests.

Usage: python -m tests.engine.worker DSN DBNAME ENDPOINT PROGRESS_SLEEP SCRIPT_JSON
SCRIPT_JSON is a list of steps: ["call", name, *args] or ["sql", query]. Prints one JSON line per
step result ({"ok": ...} or {"error": sqlstate, "message": ...}) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from engine import EngineSettings, build_registry
from engine.rpc import EngineError
from tests.engine.support import Ctx, call, sql


class SlowCtx(Ctx):
    sleep: float = 0.0

    def progress(self, message: str) -> None:
        super().progress(message)
        print(json.dumps({"progress": message}), flush=True)
        if self.sleep and message.startswith(("create ", "delete ", "update ", "replace ")):
            time.sleep(self.sleep)


async def main() -> None:
    dsn, db, endpoint, sleep, script = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), json.loads(sys.argv[5])
    reg = build_registry(EngineSettings(aws_endpoint_url=endpoint, lock_wait_timeout=60))
    ctx = SlowCtx(dsn=dsn, database=db)
    ctx.sleep = sleep
    for step in script:
        try:
            if step[0] == "call":
                rows = await call(reg, ctx, step[1], *step[2:])
                print(json.dumps({"ok": [list(map(str, r)) for r in rows], "t": time.time()}), flush=True)
            else:
                await sql(dsn, step[1])
                print(json.dumps({"ok": "sql", "t": time.time()}), flush=True)
        except EngineError as e:
            print(json.dumps({"error": e.sqlstate, "message": e.message}), flush=True)
    reg.engine_state.aws.close()


if __name__ == "__main__":
    asyncio.run(main())
