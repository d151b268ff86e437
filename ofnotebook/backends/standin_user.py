"""The deployment side of the kernel's local Dapr stand-in (``standin.py``): a deployment whose
function talks Dapr through it (local processes, containers) mixes :class:`StandInUser` in
for its events tracker, test events, state reads, and leaving the stand-in when stopped."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import DeployError, InvocationError, OfnotebookError
from .events import STANDIN_RESTART, EventTracker
from .standin import StandIn


class StandInUser:
    """For deployments whose function talks Dapr through the kernel's local stand-in: its
    events tracker, test events, state reads, and leaving the stand-in when stopped. Mixed in
    before :class:`~.base.Deployment`, it implements the contract's ``publish``,
    ``publish_many``, ``read_state`` and ``events``."""

    name: str
    standin: StandIn | None = None

    def _attach_standin(self, standin: StandIn | None) -> None:
        """Use ``standin``; the events tracker is the stand-in's for this app id, so a new
        deployment of the same name (a cell re-run) keeps its counts and dead letters."""
        self.standin = standin
        self._tracker = standin.tracker(self.name) if standin else EventTracker()
        self._stop_listening = self._tracker.listen(self._on_standin_event)

    def _on_standin_event(self, event: dict[str, Any]) -> None:
        """A restart of the stand-in is a line of the function's log (handle.logs())."""
        buffer = getattr(self, "log_buffer", None)
        if event.get("kind") == STANDIN_RESTART and buffer is not None:
            lost = int(event.get("lost", 0))
            buffer.append("ofnotebook: the local Dapr stand-in died and was started again; "
                          + (f"{lost} in-memory event(s) it held were lost" if lost else
                             "no in-memory event was lost"))

    @property
    def events(self) -> EventTracker:
        """What the stand-in reported for this app (empty for a function without Dapr)."""
        return self._tracker

    @property
    def standin_failure(self) -> str | None:
        """Why this deployment's stand-in died for good (then the function is deaf: its
        events, outputs and state go nowhere until it is deployed again)."""
        return self.standin.failure if self.standin is not None else None

    def _need_standin(self) -> StandIn:
        if self.standin is None:
            raise OfnotebookError(f"Function {self.name!r} has no inputs, outputs or state "
                                  f"stores; declare them with --input/--output/--state.")
        return self.standin

    def publish(self, input_name: str, data: bytes, content_type: str) -> None:
        try:
            self._need_standin().inject(self.name, input_name, data, content_type)
        except DeployError as exc:
            raise InvocationError(str(exc), function_name=self.name) from None

    def publish_many(self, input_name: str, items: Sequence[tuple[bytes, str]]
                     ) -> list[tuple[int, str]]:
        try:
            return self._need_standin().inject_many(self.name, input_name, items)
        except DeployError as exc:
            raise InvocationError(str(exc), function_name=self.name) from None

    def read_state(self, store: str, key: str) -> dict[str, Any]:
        try:
            return self._need_standin().read_state(self.name, store, key)
        except DeployError as exc:
            raise InvocationError(str(exc), function_name=self.name) from None

    def _leave_standin(self, unregister: bool = True) -> None:
        """``unregister``: remove the app from the stand-in. Its tracker stays the stand-in's
        (a later deployment of the name shows its counts)."""
        self._stop_listening()
        if unregister and self.standin is not None:
            try:
                self.standin.unregister(self.name)
            except DeployError:
                pass  # the stand-in is gone already: nothing left to release there
