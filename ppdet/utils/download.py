"""Weights given by their address: ``http(s)://.../NAME`` is downloaded once into a cache.

The cache is PaddleDetection's, ``~/.cache/paddle/weights/NAME`` (``~`` is ``$HOME``), so a
file PaddleDetection fetched is found without a download; ``$PPDET_WEIGHTS_HOME`` names another
folder.

A download is written to ``.NAME.part`` in the cache folder and renamed to ``NAME`` only once
it has the size the server announced and the weights loader reads it: an interrupted transfer
or an HTML error page never takes the file's place.  The next attempt (or run) resumes a partial
file with an HTTP Range request where the server allows it; an attempt that fails (no data for
``TIMEOUT`` seconds, a dropped connection, a server error) is retried, ``RETRIES`` attempts in
all.  Under ``paddle.distributed.launch`` only local rank 0 of each machine downloads; the other
local ranks wait for the file.
"""
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from ppdet.core.errors import WeightsError

__all__ = ['is_url', 'weights_home', 'cache_path', 'fetch', 'local_rank', 'CACHE_ENV']

logger = logging.getLogger('ppdet')

CACHE_ENV = 'PPDET_WEIGHTS_HOME'
RETRIES = 3           # attempts per download
TIMEOUT = 30.         # seconds without data before an attempt fails
RETRY_WAIT = 2.       # seconds before attempt k + 1: RETRY_WAIT * k
WAIT_TIMEOUT = 600.   # seconds another local rank waits while the download makes no progress
POLL = 0.5            # seconds between its looks at the cache
CHUNK = 1 << 16

# Local rank variables: paddle.distributed.launch (3.x, then 2.x), then torchrun-style launchers.
_LOCAL_RANK_VARS = ('PADDLE_LOCAL_RANK', 'PADDLE_RANK_IN_NODE', 'LOCAL_RANK')


class _Retry(Exception):
    """An attempt failed in a way another attempt may not."""


def is_url(path):
    return str(path).startswith(('http://', 'https://'))


def weights_home():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                     'paddle', 'weights')


def cache_path(url):
    """Where the file at ``url`` is kept: the cache folder and the address's file name."""
    name = os.path.basename(urllib.parse.urlsplit(url).path)
    if not name:
        raise WeightsError(f'{url}: the address names no file (it should end in the file '
                           f'name, e.g. .../model.pdparams)')
    return os.path.join(weights_home(), name)


def local_rank():
    for var in _LOCAL_RANK_VARS:
        value = os.environ.get(var, '').strip()
        if value.isdigit():
            return int(value)
    return 0


def fetch(url, validate, what='weights'):
    """The cached file of ``url``, downloaded first if it is not there.

    ``validate(path)`` raises :class:`WeightsError` when a downloaded file is not a weights
    file; ``what`` is the config key the address came from (for the hints of errors).
    """
    path = cache_path(url)
    if not os.path.isfile(path):
        if local_rank() == 0:
            _download(url, path, validate, what)
        else:
            _wait_for_download(url, path, what)
    return path


def _yourself(what, path):
    flag = '-w PATH' if what == 'weights' else f'-o {what}=PATH'
    return f'download the file yourself and pass {flag} (or put it at {path})'


def _part_file(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f'.{name}.part')


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _download(url, path, validate, what):
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise WeightsError(f'{folder}: cannot create the weights cache ({e.strerror}); set '
                           f'{CACHE_ENV} to a writable folder') from e
    part = _part_file(path)
    logger.info(f'downloading {url} to {path}')
    for attempt in range(1, RETRIES + 1):
        try:
            content_type = _attempt(url, path, what)
            break
        except _Retry as e:
            if attempt == RETRIES:
                kept = _size(part)
                resume = f' ({kept} bytes kept: the next run resumes)' if kept else ''
                raise WeightsError(f'{url}: download failed after {RETRIES} attempts ({e})'
                                   f'{resume}; check the address and the connection, or '
                                   f'{_yourself(what, path)}') from None
            logger.warning(f'{url}: {e}; retrying in {RETRY_WAIT * attempt:g} s')
            time.sleep(RETRY_WAIT * attempt)
    try:
        validate(part)
    except WeightsError:
        os.remove(part)
        sent = f' ({content_type})' if content_type else ''
        raise WeightsError(f'{url}: the server sent something that is not a weights file{sent}; '
                           f'check the address, or {_yourself(what, path)}') from None
    os.replace(part, path)
    logger.info(f'saved {path} ({os.path.getsize(path) / 2 ** 20:.1f} MiB)')


def _attempt(url, path, what):
    """Fetch ``url`` into the partial file of ``path``, resuming it; returns the response's
    content type."""
    part = _part_file(path)
    offset = _size(part) or 0
    with _open(url, path, offset, what) as response:
        start, total = _byte_range(response, offset)
        if start not in (0, offset):
            os.remove(part)
            raise _Retry(f'the server resumed at byte {start}, not {offset}; restarting')
        if offset and not start:
            logger.info(f'{url}: the server does not resume downloads; starting again')
        try:
            _copy(response, path, start, total)
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(_reason(e)) from None
        size = _size(part)
        if total is not None and size != total:
            if size > total:
                os.remove(part)
            raise _Retry(f'the connection closed after {size} of {total} bytes')
        return response.headers.get('Content-Type', '')


def _open(url, path, offset, what):
    """The server's answer to a request for ``url`` from byte ``offset`` on."""
    headers = {'User-Agent': 'ppdet', 'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    part = _part_file(path)
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:      # the partial file does not fit: start again
            os.remove(part)
            raise _Retry('the partial download does not fit the file, restarting') from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Retry(f'HTTP {e.code} {e.reason}') from None
        if os.path.exists(part):
            os.remove(part)
        raise WeightsError(f'{url}: the server answered HTTP {e.code} {e.reason}; check the '
                           f'address, or {_yourself(what, path)}') from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Retry(_reason(e)) from None


def _byte_range(response, offset):
    """``(first byte sent, total size or None)``; a 200 answer starts at 0."""
    length = response.headers.get('Content-Length')
    length = int(length) if length and length.isdigit() else None
    if response.status != 206:
        return 0, length
    # Content-Range: bytes START-END/TOTAL
    span, _, total = response.headers.get('Content-Range', '').partition('/')
    try:
        start = int(span.split()[-1].split('-')[0])
    except (IndexError, ValueError):
        raise _Retry('the server sent an unreadable Content-Range') from None
    if total.isdigit():
        return start, int(total)
    return start, start + length if length is not None else None


def _copy(response, path, start, total):
    """Write the body into the partial file of ``path`` from byte ``start`` on, with a
    progress bar (size, speed, time left)."""
    from tqdm import tqdm
    with open(_part_file(path), 'r+b' if start else 'wb') as f, \
            tqdm(total=total, initial=start, unit='B', unit_scale=True, unit_divisor=1024,
                 desc=os.path.basename(path), mininterval=0.5) as bar:
        f.seek(start)
        f.truncate()
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            f.write(chunk)
            bar.update(len(chunk))


def _reason(err):
    reason = getattr(err, 'reason', None) or err
    return f'{type(reason).__name__}: {reason}' if str(reason) else type(reason).__name__


def _wait_for_download(url, path, what):
    """Another local rank downloads ``url``: wait until ``path`` is there."""
    part = _part_file(path)
    logger.info(f'waiting for local rank 0 to download {url}')
    seen, since = _size(part), time.monotonic()
    while not os.path.isfile(path):
        size = _size(part)
        if size != seen:
            seen, since = size, time.monotonic()
        elif time.monotonic() - since > WAIT_TIMEOUT:
            raise WeightsError(f'{url}: waited {WAIT_TIMEOUT:g} s for local rank 0 to download '
                               f'it to {path} without progress; {_yourself(what, path)}')
        time.sleep(POLL)
