"""Files a caller hands the app as links, fetched within the upload limit.

An API or MCP caller may give a file input as ``{"path": "https://…"}`` instead of uploading
it (MCP clients always do). Gradio then downloads it itself, before any handler runs, through
``gradio.processing_utils.async_ssrf_protected_download``: it refuses private addresses, but it
reads the whole response into memory and has no size limit, so one link to a 50 GB file would
fill the Space's memory and disk. :func:`limit_link_downloads` puts :func:`download` in its
place (the one function every such download goes through in the pinned Gradio): the same
address checks on every hop, the body streamed to disk, stopped at the upload limit, and a file
that is not complete never left where Gradio would find and reuse it.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlparse

import gradio as gr
import httpx
import safehttpx
from gradio import processing_utils
from gradio_client import utils as client_utils

MAX_REDIRECTS = 20  # hops followed, as Gradio's own download
TIMEOUT = httpx.Timeout(30.0)  # s without a byte from the other side


def limit_link_downloads(max_bytes: int) -> None:
    """Make Gradio fetch every file link through :func:`download` with this limit."""
    processing_utils.async_ssrf_protected_download = functools.partial(
        download, max_bytes=max_bytes
    )


async def download(url: str, cache_dir: str, *, max_bytes: int) -> str:
    """``url``'s file in Gradio's cache, where Gradio's own download would put it → its path.

    Raises :class:`gradio.Error` with one sentence when the link is refused, fails or is larger
    than ``max_bytes``; nothing is left behind then.
    """
    folder = Path(cache_dir) / processing_utils.hash_url(url)
    name = Path(urlparse(url).path.rstrip("/")).name
    target = folder / (client_utils.strip_invalid_filename_characters(name) or "file")
    if target.is_file():  # only a complete download is ever renamed into place
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".part-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            await _fetch(url, out, max_bytes)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return str(target)


async def _fetch(url: str, out, max_bytes: int) -> None:
    for _ in range(MAX_REDIRECTS + 1):
        async with (
            httpx.AsyncClient(transport=await _transport(url), timeout=TIMEOUT) as client,
            client.stream("GET", url, follow_redirects=False) as response,
        ):
            if response.has_redirect_location:
                url = urljoin(str(response.url), response.headers["Location"])
                continue
            if response.status_code != 200:
                raise gr.Error(
                    f"The file link answered HTTP {response.status_code}; check the link, "
                    "or upload the file instead."
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(max_bytes)
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes)
                out.write(chunk)
            return
    raise gr.Error(
        f"The file link redirected more than {MAX_REDIRECTS} times; give the file's own link."
    )


async def _transport(url: str) -> httpx.AsyncBaseTransport | None:
    """Gradio's rule for each hop: its own hosts as they are, any other host only at a public
    address (checked once, then connected to by that address)."""
    host = httpx.URL(url).host
    if not host:
        raise gr.Error("The file link has no host name; give a full https:// link.")
    if processing_utils.async_transport is not None:
        return processing_utils.async_transport
    if safehttpx.matches_domain_whitelist(host, processing_utils.PUBLIC_HOSTNAME_WHITELIST):
        return None
    try:
        address = await safehttpx.async_validate_url(host)
    except ValueError:
        raise gr.Error(
            f"The file link's host {host} is not a public address; upload the file instead."
        ) from None
    return safehttpx.AsyncSecureTransport(address)


def _too_large(max_bytes: int) -> gr.Error:
    size = next(
        f"{max_bytes / 1024**power:.3g} {unit}"
        for power, unit in ((4, "TB"), (3, "GB"), (2, "MB"), (1, "KB"), (0, "bytes"))
        if max_bytes >= 1024**power
    )
    return gr.Error(
        f"The file at that link is larger than this app's limit of {size}; "
        "give a shorter or smaller file."
    )
