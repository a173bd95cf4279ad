from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent, JobStatus, Priority, User

__all__ = ["Database", "Job", "JobEvent", "JobStatus", "Priority", "User"]
