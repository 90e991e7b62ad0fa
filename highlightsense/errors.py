"""Typed errors raised by the library.

Each carries one sentence a user can act on. The CLI turns a :class:`UserError` into one line
on stderr and exit code 2; the app turns it into ``gr.Error``. Anything else is a bug (exit 1).
"""


class HighlightSenseError(Exception):
    """Base class of every error this package raises on purpose."""


class UserError(HighlightSenseError):
    """Something the user can fix: a bad file, a bad setting, missing weights."""


class MediaError(UserError):
    """The input media cannot be used (missing, unreadable, unsafe, no audio)."""


class SourceError(UserError):
    """A URL cannot be used (host not allowed, live stream, too long, download failed)."""


class WeightsError(UserError):
    """The highlight model's weights cannot be found or do not match the model."""


class SeparatorError(UserError):
    """The Demucs separator cannot be found or loaded."""


class SettingsError(UserError):
    """A setting is out of range."""


class DataError(UserError):
    """A training data set is unusable (unreadable file, wrong shape, empty class)."""


class Cancelled(HighlightSenseError):
    """The job was cancelled by the user (raised from inside a progress callback)."""


class ToolError(HighlightSenseError):
    """An external tool (ffmpeg, yt-dlp) failed in a way the user did not cause."""


class OutputError(UserError):
    """The output folder cannot be used: it holds someone else's files, or cannot be written."""


class TranscriptError(UserError):
    """Speech cannot be transcribed: the Whisper model cannot be found or loaded, or a
    caption's text or language cannot be used."""


class GpuRefused(UserError):
    """A shared GPU (ZeroGPU) refused or stopped a call: the visitor's quota, no free GPU."""


class ChatError(UserError):
    """A chat replay file cannot be used (unknown format, malformed, over a limit)."""
