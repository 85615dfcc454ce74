"""Only the optional C extension lives here; everything else is in pyproject.toml.

``proxy.wire._fastpath`` speeds up the relay's per-read scans. It is optional: without a C
compiler the install still succeeds and ``proxy.wire.fastpath`` uses its Python versions.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("proxy.wire._fastpath", ["proxy/wire/_fastpath.c"], optional=True,
                             extra_compile_args=["-O2"])])
