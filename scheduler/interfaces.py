"""The job store SPI of the scheduler."""

from zope.interface import Interface


class IJobStore(Interface):
    def load():
        """-> Deferred firing with every stored Job (schedules only, no message bodies)."""

    def schedule(job, message):
        """Store a new job and its message. -> Deferred firing when durable."""

    def update(job, message):
        """Store a job's new schedule (after a run). -> Deferred."""

    def message(job_id):
        """-> Deferred firing with the job's Message (or None)."""

    def remove(job_id):
        """Forget a job. -> Deferred."""

    def count():
        """Number of stored jobs."""
