"""``GET``/``HEAD /tuf/<path>``: the update repository, read-only, for orbit and any TUF client.

With ``AGENT_UPDATES["BASE_URL"]`` set (a bucket or CDN holding the repository), every valid
path redirects there instead, so the large files never pass through the web workers. Otherwise
files come from ``REPOSITORY_DIR`` through ``FileResponse`` (streamed, with sendfile where the
server offers it). What may be served and its cache headers: ``updates.serving``. No login:
the repository is public by design, its integrity comes from the signatures.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.views.decorators.http import require_safe

from updates import serving, tasks


@require_safe
def tuf_file(request: HttpRequest, path: str) -> HttpResponse:
    config = settings.AGENT_UPDATES
    kind = serving.kind_of(path)
    if kind is None:
        raise Http404("not in the update repository")
    base_url = config.get("BASE_URL") or ""
    if base_url:
        return HttpResponseRedirect(f"{base_url.rstrip('/')}/{path}")
    if path == "timestamp.json":
        tasks.refresh_timestamp_if_due()  # the embedded default has no beat; production: a no-op
    served = serving.resolve(Path(config["REPOSITORY_DIR"]), path)
    if served is None:
        raise Http404("not in the update repository")
    try:
        handle = open(served.path, "rb")  # noqa: SIM115 (FileResponse closes it)
    except OSError:
        raise Http404("not in the update repository") from None
    stat = os.fstat(handle.fileno())  # the file we opened, even if an `add` replaces it meanwhile
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    not_modified = get_conditional_response(request, etag=etag, last_modified=int(stat.st_mtime))
    if not_modified is not None or request.method == "HEAD":
        handle.close()
        response = not_modified or HttpResponse(content_type=served.kind.content_type)
        if not_modified is None:
            response["Content-Length"] = str(stat.st_size)
    else:
        response = FileResponse(handle, content_type=served.kind.content_type)
    response["ETag"] = etag
    response["Last-Modified"] = http_date(stat.st_mtime)
    response["Cache-Control"] = served.kind.cache_control
    return response
