"""The scheduler's web dashboard, JSON API and Prometheus ``/metrics``."""

from corral.dashboard.app import Dashboard

__all__ = ["Dashboard"]
