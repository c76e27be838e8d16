"""The web server's access log without patient data (issue 22 item 8).

A QIDO-RS or API query string carries PatientID and PatientName values (and a Referer may
repeat them); the access log keeps the parameter names and drops every value
("?PatientID=***&limit=***"). Who asked for what is the audit trail's record, not the log's.
gunicorn is told to use this with --logger-class alliance.access_log.ScrubbingLogger
(alliance/management/commands/run_embedded.py, deploy/systemd/alliance-web.service).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_plus

from gunicorn.glogging import Logger

HIDDEN = "***"


def scrub_query(query: str) -> str:
    """Each parameter's name, its value replaced ("PatientID=***"); no value stays."""
    names = [unquote_plus(part.partition("=")[0]) for part in query.replace(";", "&").split("&") if part]
    return "&".join(f"{quote(name, safe='')}={HIDDEN}" for name in names)


def scrub_uri(uri: str) -> str:
    """A request target or URL with its query scrubbed and its fragment dropped."""
    head, mark, query = uri.partition("?")
    head = head.partition("#")[0]
    return f"{head}?{scrub_query(query.partition('#')[0])}" if mark else head


class ScrubbingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with the request line, query and referer scrubbed in the access log."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        method, protocol = environ.get("REQUEST_METHOD", "-"), environ.get("SERVER_PROTOCOL", "-")
        atoms["r"] = f"{method} {scrub_uri(environ.get('RAW_URI', ''))} {protocol}"
        atoms["q"] = scrub_query(environ.get("QUERY_STRING", ""))
        atoms["f"] = scrub_uri(environ.get("HTTP_REFERER", "-"))
        for key in ("{referer}i", "{raw_uri}e", "{query_string}e", "{request_uri}e"):
            if key in atoms and atoms[key] not in (None, "-"):
                atoms[key] = scrub_uri(str(atoms[key])) if key != "{query_string}e" else scrub_query(str(atoms[key]))
        return atoms
