"""Only the optional compiled modules live here; everything else is in pyproject.toml.

- ``proxy.wire._fastpath`` (C): the relay's per-read scans.
- ``proxy.relay.core`` and ``proxy.wire.framing`` (Python, compiled with Cython, C types from
  their ``.pxd``): the per-transaction relay path and the server-output scanner.

All are optional: without a C compiler the install still succeeds and the same modules run as
Python (``proxy.wire.fastpath`` has Python versions of the scans).
"""

import sysconfig

from setuptools import Extension, setup

# The scans' hot loops are short: where the compiler happens to place them moved the per-read
# cost by up to 20 % between builds of the same code (bench/scan_client_prefilter.py). Aligned
# functions and loops make the cost stable (and the lowest measured). GCC and Clang know both flags.
ALIGN = ["-falign-functions=64", "-falign-loops=64"] if any(
    cc in (sysconfig.get_config_var("CC") or "") for cc in ("gcc", "clang")) else []

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - Cython is a build requirement (pyproject.toml)
    cythonize = None

extensions = [Extension("proxy.wire._fastpath", ["proxy/wire/_fastpath.c"], optional=True,
                        extra_compile_args=["-O2", *ALIGN])]
if cythonize is not None:
    compiled = [Extension(name, [name.replace(".", "/") + ".py"], optional=True, extra_compile_args=["-O2"])
                for name in ("proxy.wire.framing", "proxy.relay.core")]
    cythonized = cythonize(compiled, language_level=3, quiet=True,
                           compiler_directives={"annotation_typing": False, "binding": True,
                                                "embedsignature": True})
    for ext in cythonized:  # cythonize() returns new Extension objects without ``optional``
        ext.optional = True
    extensions += cythonized

setup(ext_modules=extensions)
