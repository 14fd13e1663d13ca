"""massive-router in Python: the seed's MassiveDataAnalyzer,
the twin of plugins/massive-router and plugins/js/massive-router-js.

Every event is cached under a per-symbol key with the seed's TTL and
published on a channel of the same name; the value is the input message
unchanged (Body.Input). Unknown or symbol-less events go to unknown:{epoch us}.
"""

import json
from typing import List, Optional, Tuple

import wit_world
from wit_world.imports import host
from wit_world.imports import types as t

ROUTES = {
    "LULD": ("stocks:luld", 86400),
    "A": ("stocks:agg", 300),
    "AM": ("stocks:agg", 300),
    "T": ("stocks:trades", 3600),
    "Q": ("stocks:quotes", 3600),
}
UNKNOWN_TTL = 86400


def kind_and_symbol(event) -> Optional[Tuple[str, str]]:
    """The event type and symbol, or None when either is missing."""
    if isinstance(event, t.Event_Trade):
        return "T", event.value.symbol
    if isinstance(event, t.Event_Quote):
        return "Q", event.value.symbol
    if isinstance(event, t.Event_Aggregate):
        return "A", event.value.symbol
    if isinstance(event, t.Event_Luld):
        return "LULD", event.value.symbol
    try:
        value = json.loads(event.value.json)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    kind, symbol = value.get("event_type"), value.get("symbol")
    if isinstance(kind, str) and isinstance(symbol, str) and symbol:
        return kind, symbol
    return None


class WitWorld(wit_world.WitWorld):
    def describe(self) -> t.Info:
        kinds = t.Kinds.TRADE | t.Kinds.QUOTE | t.Kinds.AGGREGATE | t.Kinds.LULD | t.Kinds.OTHER
        return t.Info(name="massive-router-py", version="0.1.0", consumes=kinds, state_version=0)

    def init(self, config: List[Tuple[str, str]], state: Optional[bytes]) -> None:
        return None

    def analyze(self, batch: List[t.Event]) -> List[t.Effect]:
        effects: List[t.Effect] = []
        now_us = None
        unknown = 0
        for i, event in enumerate(batch):
            body = t.Body_Input(i)
            routed = kind_and_symbol(event)
            route = ROUTES.get(routed[0]) if routed else None
            if route is not None:
                key = f"{route[0]}:{routed[1]}"
                effects.append(t.Effect_Put(t.Put(key=key, value=body, ttl_secs=route[1])))
                effects.append(t.Effect_Publish(t.Publish(channel=key, value=body)))
            else:
                unknown += 1
                if now_us is None:
                    now_us = host.now_us()
                key = f"unknown:{now_us + i}"
                effects.append(t.Effect_Put(t.Put(key=key, value=body, ttl_secs=UNKNOWN_TTL)))
                effects.append(t.Effect_Publish(t.Publish(channel="unknown", value=body)))
        if unknown:
            host.counter("mda.unknown", unknown)
        host.counter("mda.processed", len(batch))
        return effects

    def snapshot(self) -> bytes:
        return b""
