"""Client for the learnauthz decision API and its AuthZEN 1.0 endpoints (sync, async, a Flask extension in
``learnauthz_client.flask``). Fails closed by default."""

from ._core import CLIENT_ERROR, Decision, Evaluation, LearnAuthzError, Permissions, Retry, WhoCanPage, WriteResult
from .client import AsyncClient, Client

__all__ = [
    "CLIENT_ERROR",
    "AsyncClient",
    "Client",
    "Decision",
    "Evaluation",
    "LearnAuthzError",
    "Permissions",
    "Retry",
    "WhoCanPage",
    "WriteResult",
]
