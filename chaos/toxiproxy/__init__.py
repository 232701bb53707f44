"""A server speaking the toxiproxy 2.x HTTP API, and the client the suite drives it with.

* :class:`ToxiproxyServer` — proxies with toxics (:mod:`.toxics`), served by
  :class:`Api` (routes, bodies, status codes and errors as toxiproxy's);
  ``foundation chaos toxiproxy`` runs one.
* :func:`open_toxiproxy` — a toxiproxy for a chaos run: ``TOXIPROXY_URL``, a
  real ``toxiproxy-server`` on ``PATH``, or ours.
* :class:`ToxiproxyClient` — the few calls the nemeses make.
"""

from chaos.toxiproxy.api import VERSION, Api
from chaos.toxiproxy.client import ToxiproxyClient
from chaos.toxiproxy.errors import ApiError
from chaos.toxiproxy.proxy import Proxy
from chaos.toxiproxy.server import ToxiproxyServer, open_toxiproxy
from chaos.toxiproxy.toxics import ATTRIBUTES, Toxic

__all__ = ["ATTRIBUTES", "Api", "ApiError", "Proxy", "Toxic", "ToxiproxyClient", "ToxiproxyServer", "VERSION", "open_toxiproxy"]
