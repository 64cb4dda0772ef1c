"""kopf handlers, one module per kind; importing this package registers them all."""

from tributary_operator.controllers import embeddingindex, ingestionjob, setup, streampipeline

__all__ = ["embeddingindex", "ingestionjob", "setup", "streampipeline"]
