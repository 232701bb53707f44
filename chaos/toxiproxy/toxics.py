"""Toxics: what a proxy does to the bytes of one direction of a connection.

A toxic is data (:class:`Toxic`: name, type, stream, toxicity, attributes),
validated and rendered exactly as toxiproxy 2.x does (attribute names, field
order, integer attributes, defaults of 0). What each type does lives in
:mod:`chaos.toxiproxy.link`, which applies the toxics of a direction to every
chunk it forwards:

=============  ==========================  ======================================
type           attributes                  effect on the stream it is set on
=============  ==========================  ======================================
latency        latency, jitter (ms)        each chunk waits latency ± jitter
bandwidth      rate (KB/s)                 at most ``rate`` kilobytes per second
slow_close     delay (ms)                  the close is passed on ``delay`` late
timeout        timeout (ms)                no data passes; the connection closes
                                           after ``timeout`` (0: never)
reset_peer     timeout (ms)                the connection is reset (TCP RST)
                                           after ``timeout``
slicer         average_size, size_variation (bytes), delay (µs)
                                           chunks cut into pieces, ``delay`` apart
limit_data     bytes                       closed once ``bytes`` have passed
=============  ==========================  ======================================

``toxicity`` is the probability that the toxic applies to a connection,
drawn once per connection and toxic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from chaos.toxiproxy.errors import ApiError, bad_request, json_str

# Attribute names of each type, in toxiproxy's field order.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
}
STREAMS = ("upstream", "downstream")

INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
INVALID_TYPE = ApiError("invalid toxic type", 400)


def _int_attribute(toxic_type: str, key: str, value: Any) -> int:
    # toxiproxy decodes attributes into Go integers: a fraction or a string is a bad body.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into attribute {key} of {toxic_type} (an integer)")
    return int(value)


def _toxicity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into field toxicity (a number)")
    # Stored as a float32, as toxiproxy does: 0.1 reads back as 0.1, not 0.10000000149.
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def go_float32(value: float) -> str:
    """``value`` as Go's encoding/json writes a float32: the shortest form that reads back."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return text
    return repr(value)


@dataclass
class Toxic:
    """One toxic of a proxy (see the module docstring)."""

    name: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Any) -> "Toxic":
        """A new toxic from a create request's JSON body.

        Raises:
            ApiError: 400 for a bad body, stream or type (toxiproxy's messages).
        """
        if not isinstance(body, dict):
            raise bad_request("json: cannot unmarshal into a toxic (an object)")
        stream = body.get("stream", "downstream")
        if stream not in STREAMS:
            raise INVALID_STREAM
        toxic_type = body.get("type", "")
        name = body.get("name") or f"{toxic_type}_{stream}"
        if toxic_type not in ATTRIBUTES:
            raise INVALID_TYPE
        toxic = cls(name=str(name), type=toxic_type, stream=stream, attributes={k: 0 for k in ATTRIBUTES[toxic_type]})
        toxic.apply(body)
        return toxic

    def apply(self, body: Any) -> None:
        """Update attributes and toxicity from a JSON body (others keep their values)."""
        if not isinstance(body, dict):
            raise bad_request("json: cannot unmarshal into a toxic (an object)")
        attrs = body.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise bad_request("json: cannot unmarshal attributes (an object)")
        new = dict(self.attributes)
        for key in ATTRIBUTES[self.type]:
            if key in attrs:
                new[key] = _int_attribute(self.type, key, attrs[key])
        toxicity = _toxicity(body["toxicity"]) if "toxicity" in body else self.toxicity
        self.attributes = new
        self.toxicity = toxicity

    def to_json(self) -> str:
        """toxiproxy's rendering: compact, fields in its order."""
        attrs = ",".join(f'"{k}":{self.attributes[k]}' for k in ATTRIBUTES[self.type])
        return (
            f'{{"attributes":{{{attrs}}},"name":{json_str(self.name)},"type":"{self.type}",'
            f'"stream":"{self.stream}","toxicity":{go_float32(self.toxicity)}}}'
        )
