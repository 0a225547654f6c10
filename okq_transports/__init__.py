"""okq_transports: the I/O around the sans-I/O core (``okq_proto``).

The clients (``okq_transports.sync``, ``.asyncio``, ``.trio``, ``.redis``), the embedded server
(``okq_transports.server``), the ``okq`` command line (``okq_transports.cli``) and the pytest
plugin.  This package itself holds only the distribution's version and the ``"okq"`` logger's
`logging.NullHandler`.
"""

import logging as _logging

import okq_proto as _proto

#: The okq distribution's version (one source: ``okq_proto.__version__``).
__version__: str = _proto.__version__

__all__ = ["__version__"]

# A library's loggers ("okq", "okq.server") hand records to the application's handlers and to
# none of their own: without this, a warning logged before the application configured logging
# would reach stderr through logging's last resort.  Added once (also on a reload).
_okq_logger = _logging.getLogger("okq")
if not any(isinstance(h, _logging.NullHandler) for h in _okq_logger.handlers):
    _okq_logger.addHandler(_logging.NullHandler())
