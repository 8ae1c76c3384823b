"""Send result tables and sky positions to desktop tools (TOPCAT, Aladin, DS9) through a SAMP hub.

The hub is found as the SAMP standard profile says: the lockfile that ``SAMP_HUB`` names
(``std-lockurl:file:///PATH``), else ``~/.samp``; TOPCAT and Aladin each start one. Every call to the hub
answers within TIMEOUT_S (calls that wait for a tool, ANSWER_S more), so a missing or stuck hub is an
error, never a hang. Each tool that takes a message is called and waited for (as pyvo's ``send_table_to``
does): its answer says whether it loaded the table, and galsearch stays registered until it has answered.
Tables travel as VOTable files in the temporary folder, read by the tools through their file:// URL: the
hub and the tools are those of the machine galsearch runs on.
"""

from __future__ import annotations

import http.client
import math
import os
import tempfile
import uuid
import xmlrpc.client
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd
from pyvo.samp import SAMPHubProxy
from pyvo.samp.utils import SAMPXXEServerProxy, ServerProxyPool, get_safe_parser

from galsearch.embedder.errors import GalsearchError
from galsearch.index import write_results

TIMEOUT_S = 3.0
ANSWER_S = 10  # how long a tool may take to answer that it loaded a table or moved to a position
TABLE_MTYPE = "table.load.votable"
POINT_MTYPE = "coord.pointAt.sky"
SERVER_SIDE = (
    "Sent through the SAMP hub of the machine that runs galsearch: TOPCAT and Aladin there get it, "
    "not those beside your browser when that is another machine."
)
METADATA = {"samp.name": "galsearch", "samp.description.text": "galsearch: galaxy image similarity search"}
START_HINT = (
    "start TOPCAT or Aladin (each starts a hub), or name a hub's lockfile with "
    "SAMP_HUB=std-lockurl:file:///PATH"
)
# What the hub proxy raises when the hub is gone, stuck, not a hub, or refuses a call (pyvo's SAMPProxyError
# is an xmlrpc Fault).
_FAILURES = (OSError, http.client.HTTPException, xmlrpc.client.Error)


class SampError(GalsearchError):
    """No SAMP hub answers, or no tool connected to it takes the message."""


def send_table(table: pd.DataFrame, name: str, path: Path | None = None) -> str:
    """Broadcast ``table`` as a VOTable (``table.load.votable``), written to ``path`` (default: a new file in
    the temporary folder) and kept there, since a tool may read it again later; returns what was sent to
    whom."""
    if path is None:
        with tempfile.NamedTemporaryFile(prefix="galsearch-samp-", suffix=".xml", delete=False) as file:
            path = Path(file.name)
    write_results(table, path, "votable")
    params = {"url": path.as_uri(), "table-id": f"galsearch-{uuid.uuid4().hex}", "name": name}
    try:
        who = _broadcast(TABLE_MTYPE, params, "no tool connected to the SAMP hub loads tables: start TOPCAT")
    except SampError:
        path.unlink()
        raise
    return f"sent {len(table)} rows to SAMP clients ({who})"


def point_at(ra: float, dec: float) -> str:
    """Ask the sky viewers (Aladin, ...) to point at ``ra``, ``dec`` in degrees (``coord.pointAt.sky``);
    returns what was sent to whom."""
    if not (math.isfinite(ra) and math.isfinite(dec) and -90 <= dec <= 90):
        raise SampError(f"cannot point at ra={ra}, dec={dec}: not a sky position in degrees")
    params = {"ra": repr(float(ra)), "dec": repr(float(dec))}
    who = _broadcast(POINT_MTYPE, params, "no tool connected to the SAMP hub shows the sky: start Aladin")
    return f"sent ra={ra:.6f}, dec={dec:.6f} to SAMP clients ({who})"


def hub_available() -> bool:
    """Whether a SAMP hub answers (at once when none has left a lockfile)."""
    try:
        _running_hub()
    except SampError:
        return False
    return True


def _broadcast(mtype: str, params: dict[str, str], nobody: str) -> str:
    """Send ``mtype`` to every client subscribed to it; who took it and who did not (SampError ``nobody``
    when no client is subscribed, and one naming the refusals when no client took it)."""
    hub = _hub()
    try:
        key = hub.register(hub.lockfile["samp.secret"])["samp.private-key"]
        try:
            hub.declare_metadata(key, METADATA)
            message = {"samp.mtype": mtype, "samp.params": params}
            answers = {
                hub.get_metadata(key, client).get("samp.name", client): _call(hub, key, client, message)
                for client in hub.get_subscribed_clients(key, mtype)
            }
        finally:
            hub.unregister(key)
    except _FAILURES as exc:
        raise SampError(f"the SAMP hub at {hub.lockfile['samp.hub.xmlrpc.url']} failed: {exc}") from exc
    finally:
        hub.disconnect()
    if not answers:
        raise SampError(nobody)
    refused = [f"not {name}: {why}" for name, why in answers.items() if why]
    if len(refused) == len(answers):
        raise SampError(f"no SAMP client took the {mtype} message ({', '.join(refused)})")
    return ", ".join([name for name, why in answers.items() if not why] + refused)


def _call(hub: SAMPHubProxy, key: str, client: str, message: dict) -> str:
    """Send ``message`` to ``client`` and wait for its answer: empty if it took the message, else why not."""
    try:
        answer = hub.call_and_wait(key, client, message, str(ANSWER_S))
    except xmlrpc.client.Fault as exc:  # from the hub: the client left, or did not answer in time
        return exc.faultString
    if answer.get("samp.status") in ("samp.ok", "samp.warning"):
        return ""
    return answer.get("samp.error", {}).get("samp.errortxt") or f"it answered {answer}"


class _Transport(xmlrpc.client.Transport):
    """XML-RPC over HTTP that gives up after ``timeout`` seconds, parsing replies safely as pyvo's does."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection

    def getparser(self):
        return get_safe_parser(self._use_datetime, self._use_builtin_types)


def _hub() -> SAMPHubProxy:
    """pyvo's proxy of the running hub, its calls bounded by TIMEOUT_S + ANSWER_S."""
    hub = SAMPHubProxy()
    hub.lockfile = _running_hub()
    # What hub.connect(hub_params=...) does, with a timeout: pyvo's proxy would wait for ever on a stuck hub.
    url, transport = hub.lockfile["samp.hub.xmlrpc.url"], _Transport(TIMEOUT_S + ANSWER_S)
    hub.proxy = ServerProxyPool(1, SAMPXXEServerProxy, url, allow_none=True, transport=transport)
    return hub


def _running_hub() -> dict[str, str]:
    """The lockfile of the hub in use, once the hub has answered a ping within TIMEOUT_S."""
    path = _lockfile()
    params = _read_lockfile(path)
    url = params["samp.hub.xmlrpc.url"]
    proxy = SAMPXXEServerProxy(url, allow_none=True, transport=_Transport(TIMEOUT_S))
    try:
        proxy.samp.hub.ping()
    except _FAILURES as exc:
        raise SampError(f"no SAMP hub answers at {url} (named by {path}: {exc}); {START_HINT}") from exc
    finally:
        proxy("close")()
    return params


def _lockfile() -> Path:
    """The hub's lockfile: the file that ``SAMP_HUB`` names, else ~/.samp (the standard profile's rule)."""
    setting = os.environ.get("SAMP_HUB")
    if not setting:
        return Path.home() / ".samp"
    url = setting.removeprefix("std-lockurl:")
    parsed = urlparse(url)
    if url == setting or parsed.scheme != "file":
        raise SampError(
            f"SAMP_HUB={setting!r} is not a lockfile galsearch can read: give std-lockurl:file:///PATH"
        )
    return Path(url2pathname(parsed.path))


def _read_lockfile(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a hub's lockfile."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SampError(f"no SAMP hub is running (there is no {path}): {START_HINT}") from None
    except OSError as exc:
        raise SampError(f"cannot read the SAMP hub's lockfile {path}: {exc}") from exc
    lines = (line.partition("=") for line in text.splitlines() if not line.startswith("#"))
    params = {key.strip(): value.strip() for key, sep, value in lines if sep}
    if not {"samp.hub.xmlrpc.url", "samp.secret"} <= params.keys():
        raise SampError(f"{path} is not a SAMP hub's lockfile (no samp.hub.xmlrpc.url or samp.secret)")
    params["samp.hub.xmlrpc.url"] = params["samp.hub.xmlrpc.url"].replace("\\", "")  # Java escapes ':'
    return params
