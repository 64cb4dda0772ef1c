"""kopf handlers, one module per kind; importing this package registers them all."""

from tributary_operator.controllers import ingestionjob, setup

__all__ = ["ingestionjob", "setup"]
