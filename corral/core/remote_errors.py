"""Exceptions raised by a handler, carried back to the caller and raised there again.

The reply holds the exception pickled on its own, so a caller that cannot rebuild it
(an exception class it cannot import, one that does not pickle) still gets a
``RemoteError`` with the type name, message and traceback text.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass

from corral.exceptions import RemoteError
from corral.protocol import dumps_pickle


@dataclass(slots=True)
class ErrorReply:
    """The reply a server writes when a handler raised."""

    type_name: str
    message: str
    traceback_text: str
    pickled: bytes | None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorReply:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            pickled: bytes | None = dumps_pickle(exc)
        except Exception:
            pickled = None
        return cls(type(exc).__qualname__, str(exc), tb, pickled)

    def to_exception(self) -> BaseException:
        """The original exception if it can be rebuilt, else ``RemoteError``; traceback noted."""
        exc: BaseException | None = None
        if self.pickled is not None:
            try:
                exc = pickle.loads(self.pickled)
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            exc = RemoteError(self.type_name, self.message, self.traceback_text)
        exc.add_note(f"Remote traceback:\n{self.traceback_text.rstrip()}")
        return exc

    def __repr__(self) -> str:
        return f"<ErrorReply {self.type_name}: {self.message}>"
