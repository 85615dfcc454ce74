"""The relay's per-transaction path (``proxy.relay.core``) and the server-output scanner
(``proxy.wire.framing``) are compiled at install wherever a C compiler exists: ``setup.py`` marks
them optional, so a failed build would otherwise only show as a slower proxy."""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest

from proxy.relay import core
from proxy.wire import fastpath, framing


def _have_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


@pytest.mark.skipif(bool(os.environ.get("IASQL_PROXY_PURE")), reason="IASQL_PROXY_PURE asks for the Python form")
@pytest.mark.skipif(not _have_compiler(), reason="no C compiler: the Python form is expected")
def test_compiled_where_a_compiler_exists():
    assert core.compiled, f"proxy.relay.core runs as Python ({core.__file__}): the Cython build failed"
    assert not framing.__file__.endswith(".py"), f"proxy.wire.framing runs as Python ({framing.__file__})"
    assert fastpath.compiled, "proxy.wire._fastpath was not built"

