"""What every page event answers: one value per entry of :data:`PAGE`, so ``app.py`` wires every
event to the same list of components, and a failure becomes one sentence in the status line.

A handler returns :func:`page` with the values it changes (``gr.skip()`` for the rest); the
browser's memory (:func:`read_state`) is checked like any other input.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from ..errors import Cancelled, UserError
from . import view
from .jobs import is_token, new_token
from .messages import for_visitor

LOG = logging.getLogger("highlightsense.app")

CONTROLS = ("top_n", "window", "picky_by", "percentile", "threshold", "gap")
CONTROLS += ("pad_before", "pad_after", "cut", "chat_weight")
PAGE = (
    "state",
    "status",
    "results",
    "results_below",
    "plot",
    "gallery",
    "audio_note",
    "table",
    "downloads",
)
PAGE += ("picker", "clip_video", "clip_audio", "why", "timer", "cancel", *CONTROLS)
VERTICAL = ("layout", "place", "facecam", "gameplay", "slice_at")  # the vertical choice
PAGE += ("vertical_box", "frame_view", "phone_view", "vertical_note", *VERTICAL)
PAGE += ("captions", "captions_note", "caption_text", "recut")  # the Captions panel


# --- answering every input with a sentence ---------------------------------------------------


def sentence(error: BaseException, where: str) -> str:
    """The visitor's sentence for ``error``; anything but a user's mistake is logged in full."""
    if not isinstance(error, UserError | Cancelled):
        LOG.error("%s failed", where, exc_info=error)
    return for_visitor(error)


def page_handler(fn: Callable) -> Callable:
    """A page handler whose failures land in the status line, the results left as they are."""

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[tuple]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                yield page(status=view.message(sentence(error, fn.__name__), "error"))

        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> tuple:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            return page(status=view.message(sentence(error, fn.__name__), "error"))

    return plain


def quiet_handler(fn: Callable) -> Callable:
    """A helper event (a click on a row): bad input changes nothing."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> object:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            sentence(error, fn.__name__)
            return gr.skip()

    return wrapper


def page(**values: object) -> tuple:
    """One value per PAGE entry: those given, gr.skip() for the rest."""
    unknown = set(values) - set(PAGE)
    if unknown:
        raise ValueError(f"not on the page: {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in PAGE)


def read_state(state: object) -> dict:
    """The browser's memory: its visitor token, the job on screen and the one running."""
    state = state if isinstance(state, dict) else {}
    return {
        "visitor": state["visitor"] if is_token(state.get("visitor")) else new_token(),
        "job": state.get("job") if is_token(state.get("job")) else "",
        "pending": state.get("pending")
        if state.get("pending") in ("queued", "") or is_token(state.get("pending"))
        else "",
    }


def idle(state: dict) -> dict:
    """Page values of nothing running: Cancel and the poll gone."""
    return {
        "state": {**state, "pending": ""},
        "timer": gr.update(active=False),
        "cancel": gr.update(visible=False),
    }


def busy(state: dict, pending: str) -> dict:
    return {
        "state": {**state, "pending": pending},
        "timer": gr.update(active=True),
        "cancel": gr.update(visible=True),
    }
