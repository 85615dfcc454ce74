"""iasql-proxy: the PostgreSQL wire-protocol proxy (see README.md).

``IASQL_PROXY_PURE=1`` in the environment makes the modules that are compiled at install
(``proxy.relay.core``, ``proxy.wire.framing``, ``proxy.wire._fastpath``) run as Python, as they do
where no C compiler was available; the tests use it to check that form too.
"""

import os as _os

if _os.environ.get("IASQL_PROXY_PURE"):
    import importlib.machinery as _machinery
    import importlib.util as _util
    import sys as _sys

    class _SourceOnly:
        """Meta path finder: the ``.py`` source of the compiled modules, never their extension."""

        _here = _os.path.dirname(__file__)
        _names = {"proxy.relay.core": ("relay", "core.py"), "proxy.wire.framing": ("wire", "framing.py")}

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name == "proxy.wire._fastpath":
                raise ImportError("IASQL_PROXY_PURE: the C scans are not used")
            where = cls._names.get(name)
            if where is None:
                return None
            return _util.spec_from_file_location(
                name, _os.path.join(cls._here, *where),
                loader=_machinery.SourceFileLoader(name, _os.path.join(cls._here, *where)))

    _sys.meta_path.insert(0, _SourceOnly)
