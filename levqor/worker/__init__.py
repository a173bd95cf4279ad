"""Workers: the loop that runs workflow handlers on claimed jobs, in-process or standalone.

Nothing here imports the web layers (`levqor.http`, `levqor.rest`, `levqor.schema`)."""

from levqor.worker.loop import Worker, new_worker_id
from levqor.worker.process import WorkerServices, run_standalone

__all__ = ["Worker", "WorkerServices", "new_worker_id", "run_standalone"]
