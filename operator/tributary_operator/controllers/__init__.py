"""kopf handlers, one module per kind; importing this package registers them all."""

from tributary_operator.controllers import embeddingindex, ingestionjob, setup

__all__ = ["embeddingindex", "ingestionjob", "setup"]
