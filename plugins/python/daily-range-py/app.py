"""daily-range in Python: the seed's DailyRangeAnalyzer,
the twin of plugins/daily-range, a stateful scanner on
`quote:*` that passes the Rust crate's golden files (snapshot and cold
restarts included).

Per symbol it tracks the high and low of each session of the trading day
(pre-market, regular, after-hours); every payload becomes
daily_range:{SYM} (the payload plus the six session fields, put and
published); a new session high or low after the session's first print is an
alert pushed onto and published on daily_range_hod_alert /
daily_range_lod_alert. The trading day starts at 04:00 New York; the
session comes from the market-status import, else from the schedule.
Symbols are rehydrated from their stored records on first sight, and
`snapshot` hands the ranges to the next instance. Rules, reasons, counters
and the JSON text written are exactly the Rust crate's.
"""

import json
import re
from typing import Any, Dict, List, Optional, Tuple

import wit_world
from componentize_py_types import Err
from wit_world.imports import cache, host, reference
from wit_world.imports import types as t

RANGE_TTL = 345_600
ALERT_TTL = 28_800
HOD_KEY = "daily_range_hod_alert"
LOD_KEY = "daily_range_lod_alert"
BOUNDARY_KEY = "daily_range:day_boundary"
PRE, REGULAR, AFTER = 0, 1, 2
SESSION_NAMES = ("pre_market", "regular", "after_hours")
FIELDS = (
    ("pre_market_high", "pre_market_low"),
    ("regular_session_high", "regular_session_low"),
    ("after_hours_high", "after_hours_low"),
)
# Earlier sessions whose extremes a new one's breach note names, in order.
BREACH_CHECKS = {PRE: (), REGULAR: ((PRE, "pre-market"),), AFTER: ((REGULAR, "regular session"), (PRE, "pre-market"))}
DAY = 86_400

# --- New York time by the US rules (since 2007), without tz data ---------


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def year_of(days: int) -> int:
    """The year of a day number."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    return yoe + era * 400 + (mp >= 10)


def weekday(days: int) -> int:
    """Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday)."""
    return (days + 3) % 7


def nth_sunday(y: int, m: int, n: int) -> int:
    """The day number of the n-th Sunday of a month."""
    first = days_from_civil(y, m, 1)
    return first + (6 - weekday(first)) % 7 + 7 * (n - 1)


def ny_offset(secs: int) -> int:
    """New York's UTC offset at a Unix time, seconds (EDT -4 h, EST -5 h)."""
    y = year_of(secs // DAY)
    start = nth_sunday(y, 3, 2) * DAY + 7 * 3600  # 02:00 EST
    end = nth_sunday(y, 11, 1) * DAY + 6 * 3600  # 02:00 EDT
    return -14400 if start <= secs < end else -18000


def ny_local(secs: int) -> Tuple[int, int]:
    """New York local (day number, seconds into the day) of a Unix time."""
    local = secs + ny_offset(secs)
    return local // DAY, local % DAY


def ny_to_utc(days: int, second: int) -> int:
    """The earliest Unix time showing local `second` of day `days` in New York."""
    local = days * DAY + second
    valid = [local - off for off in (-14400, -18000) if ny_offset(local - off) == off]
    return min(valid) if valid else local + 18000


def day_anchor(now_us: int) -> int:
    """04:00 New York of the trading day containing now_us, Unix seconds."""
    days, second = ny_local(now_us // 1_000_000)
    if second < 4 * 3600:
        days -= 1
    return ny_to_utc(days, 4 * 3600)


def scheduled_session(now_us: int) -> Optional[int]:
    """The session by the regular schedule (no holidays), when status is unavailable."""
    days, second = ny_local(now_us // 1_000_000)
    if weekday(days) >= 5:
        return None
    minute = second // 60
    if 240 <= minute < 570:
        return PRE
    if 570 <= minute < 960:
        return REGULAR
    if 960 <= minute < 1200:
        return AFTER
    return None


def session_of(status: t.MarketStatus) -> Optional[int]:
    """The session a market status stands for (seed _get_session)."""
    if status.market == t.Market.OPEN:
        return REGULAR
    if status.early_hours:
        return PRE
    if status.after_hours:
        return AFTER
    return None


# --- JSON as serde_json writes it -----------------------------------------


def no_constants(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON (serde agrees)."""
    raise ValueError(f"{name} is not JSON")


def loads_object(text: str) -> Optional[Dict[str, Any]]:
    """The JSON object in text (keys in order), or None."""
    try:
        value = json.loads(text, parse_constant=no_constants)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def float_text(x: float) -> str:
    """A float as serde_json (ryu) writes it: 10.0, 1e16, 1.5e-7, 0.00001."""
    r = repr(x)
    if "e" not in r:
        return r
    mantissa, exp = r.split("e")
    if int(exp) == -5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e{int(exp)}"


def dump(v: Any) -> str:
    """Compact JSON text, byte for byte what serde_json writes."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return float_text(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dump(x) for k, x in v.items()) + "}"


def positive(v: Any) -> Optional[float]:
    """A finite number above zero, as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    x = float(v)
    return x if x > 0.0 and x != float("inf") else None


def epoch_seconds(ts: float) -> float:
    """Epoch seconds from a timestamp in s, ms, us or ns (by magnitude)."""
    if ts >= 1e17:
        return ts / 1e9
    if ts >= 1e14:
        return ts / 1e6
    if ts >= 1e11:
        return ts / 1e3
    return ts


def payload_time(o: Dict[str, Any]) -> Optional[float]:
    """The payload's own time, epoch seconds: t, timestamp, end_timestamp."""
    for k in ("t", "timestamp", "end_timestamp"):
        p = positive(o.get(k))
        if p is not None:
            return epoch_seconds(p)
    return None


def valid_symbol(s: str) -> bool:
    """1 to 32 printable ASCII characters other than glob metacharacters."""
    return 1 <= len(s) <= 32 and all(0x21 <= ord(c) <= 0x7E and c not in "*?[]" for c in s)


def note(before: List[List[Optional[float]]], session: int, high: bool, price: float) -> str:
    """The cross-session breach note of a new extreme (seed wording)."""
    for i, label in BREACH_CHECKS[session]:
        bound = before[i][0 if high else 1]
        if bound is not None and (price > bound if high else price < bound):
            return f"Broke {label} {'high' if high else 'low'} of ${bound:.2f}"
    return ""


def config_u32(config: List[Tuple[str, str]], key: str, default: int) -> int:
    """A u32 config value (the last pair named key), else default."""
    value: Optional[str] = None
    for k, v in config:
        if k == key:
            value = v
    if value is None:
        return default
    if not re.fullmatch(r"\+?[0-9]+", value) or int(value) > 0xFFFFFFFF:
        raise Err(t.AnalyzerError_BadConfig(f"config `{key}` = `{value}`: invalid digit found in string"))
    return int(value)


def body(text: str) -> t.Body:
    return t.Body_Json(text)


def ranges_new() -> List[List[Optional[float]]]:
    return [[None, None], [None, None], [None, None]]


class State:
    """The analyzer's state (module level: it outlives each export call)."""

    list_max = 1000
    anchor = 0
    init_anchor = 0
    boundary_written = 0
    trust_untimed = False
    symbols: Dict[str, List[List[Optional[float]]]] = {}
    status_down = False


S = State


def current_session(now_us: int) -> Optional[int]:
    """The session from market status, else from the schedule (logged once per outage)."""
    try:
        status = reference.market_now()
    except Err as e:
        if not S.status_down:
            S.status_down = True
            host.log(host.Level.WARN, f"market status unavailable ({e.value}); sessions follow the schedule")
        host.counter("dra.market_status_fallback", 1)
        return scheduled_session(now_us)
    if S.status_down:
        S.status_down = False
        host.log(host.Level.INFO, "market status available again")
    return session_of(status)


def rehydrate(wanted: List[str], session: Optional[int]) -> None:
    """Restore the symbols of wanted not seen yet from their stored records."""
    fresh = [s for s in wanted if s not in S.symbols]
    if not fresh:
        return
    if S.anchor != S.init_anchor:
        # A day boundary passed since the start: everything stored is older.
        for s in fresh:
            S.symbols[s] = ranges_new()
        return
    elapsed = {PRE: 1, REGULAR: 2}.get(session, 3) if session is not None else 3
    restored = 0
    records = cache.get_many([f"daily_range:{s}" for s in fresh])
    for symbol, record in zip(fresh, records):
        ranges = ranges_new()
        o = loads_object(record) if record is not None else None
        if o is not None:
            when = payload_time(o)
            if (when >= S.anchor) if when is not None else S.trust_untimed:
                for i in range(elapsed):
                    h, l = FIELDS[i]
                    ranges[i] = [positive(o.get(h)), positive(o.get(l))]
                restored += 1
        S.symbols[symbol] = ranges
    if restored:
        host.counter("dra.rehydrated", restored)


def reject(i: int, reason: str) -> t.Effect:
    return t.Effect_Reject(t.Reject(index=i, reason=reason))


def decode(i: int, event: t.Event) -> Tuple[Optional[Tuple[str, Dict[str, Any]]], Optional[t.Effect]]:
    """The symbol and payload of an event, or the reason it is refused."""
    if not isinstance(event, t.Event_Other):
        return None, reject(i, "not a pub/sub quote payload")
    o = loads_object(event.value.json)
    if o is None:
        return None, reject(i, "payload is not a JSON object")
    symbol = None
    for k in ("sym", "symbol"):
        v = o.get(k)
        if isinstance(v, str) and v:
            symbol = v
            break
    if symbol is None:
        return None, reject(i, "payload has no symbol")
    if not valid_symbol(symbol):
        return None, reject(i, "payload symbol is not a valid ticker")
    return (symbol, o), None


def extend(r: List[Optional[float]], side: int, price: float, higher: bool) -> Optional[float]:
    """Move a session extreme to price when it is beyond it; the previous one when that is an alert."""
    prev = r[side]
    if prev is None:
        r[side] = price
        return None
    if (price > prev) if higher else (price < prev):
        r[side] = price
        return prev
    return None


class WitWorld(wit_world.WitWorld):
    def describe(self) -> t.Info:
        return t.Info(name="daily-range-py", version="0.1.0", consumes=t.Kinds.OTHER, state_version=1)

    def init(self, config: List[Tuple[str, str]], state: Optional[bytes]) -> None:
        S.list_max = config_u32(config, "dra_cache_list_max", 1000)
        S.status_down = False
        anchor = day_anchor(host.now_us())
        saved = None
        if state:
            try:
                saved = json.loads(bytes(state))
            except ValueError:
                saved = None
        if isinstance(saved, dict) and saved.get("anchor") == anchor:
            S.anchor = anchor
            S.init_anchor = saved["init_anchor"]
            S.boundary_written = saved["boundary_written"]
            S.trust_untimed = saved["trust_untimed"]
            S.symbols = saved["symbols"]
            return
        raw = cache.get(BOUNDARY_KEY)
        text = raw.strip('"') if raw is not None else ""
        stored = int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None
        S.anchor = anchor
        S.init_anchor = anchor
        S.boundary_written = stored if stored is not None else 0
        S.trust_untimed = stored == anchor
        S.symbols = {}

    def analyze(self, batch: List[t.Event]) -> List[t.Effect]:
        now_us = host.now_us()
        host.counter("dra.processed", len(batch))
        effects: List[t.Effect] = []
        anchor = day_anchor(now_us)
        if anchor != S.anchor:
            # Every replica forgets the previous trading day on its own.
            S.anchor = anchor
            S.symbols = {}
            host.counter("dra.day_resets", 1)
        if S.boundary_written != anchor:
            S.boundary_written = anchor
            effects.append(t.Effect_Put(t.Put(key=BOUNDARY_KEY, value=body(str(anchor)), ttl_secs=None)))
        payloads: List[Tuple[str, Dict[str, Any]]] = []
        for i, event in enumerate(batch):
            payload, refused = decode(i, event)
            if refused is not None:
                effects.append(refused)
            else:
                payloads.append(payload)
        if not payloads:
            return effects
        session = current_session(now_us)
        rehydrate(sorted({s for s, _ in payloads}), session)
        alerts = 0
        for symbol, o in payloads:
            ranges = S.symbols.setdefault(symbol, ranges_new())
            new_alerts = []
            high = positive(o.get("high"))
            high = high if high is not None else positive(o.get("h"))
            low = positive(o.get("low"))
            low = low if low is not None else positive(o.get("l"))
            if session is not None and high is not None and low is not None:
                before = [list(r) for r in ranges]
                prev = extend(ranges[session], 0, high, True)
                if prev is not None:
                    new_alerts.append((True, high, prev, note(before, session, True, high)))
                prev = extend(ranges[session], 1, low, False)
                if prev is not None:
                    new_alerts.append((False, low, prev, note(before, session, False, low)))
            state = dict(o)
            for i, (h, l) in enumerate(FIELDS):
                state[h] = ranges[i][0]
                state[l] = ranges[i][1]
            key = f"daily_range:{symbol}"
            record = body(dump(state))
            effects.append(t.Effect_Put(t.Put(key=key, value=record, ttl_secs=RANGE_TTL)))
            effects.append(t.Effect_Publish(t.Publish(channel=key, value=record)))
            if not new_alerts:
                continue
            when = payload_time(o)
            timestamp = when if when is not None else now_us / 1e6
            name = SESSION_NAMES[session] if session is not None else ""
            for is_high, price, previous, why in new_alerts:
                alerts += 1
                alert: Dict[str, Any] = {
                    "session": name,
                    "direction": "high" if is_high else "low",
                    "price": price,
                    "previous": previous,
                    "timestamp": timestamp,
                    "note": why,
                }
                alert.update(o)
                # Payload fields win, except the alert's time in epoch seconds.
                alert["timestamp"] = timestamp
                target = HOD_KEY if is_high else LOD_KEY
                text = body(dump(alert))
                effects.append(t.Effect_Push(t.Push(key=target, value=text, max_len=S.list_max, ttl_secs=ALERT_TTL)))
                effects.append(t.Effect_Publish(t.Publish(channel=target, value=text)))
        if alerts:
            host.counter("dra.alerts", alerts)
        return effects

    def snapshot(self) -> bytes:
        return json.dumps(
            {
                "anchor": S.anchor,
                "init_anchor": S.init_anchor,
                "boundary_written": S.boundary_written,
                "trust_untimed": S.trust_untimed,
                "symbols": S.symbols,
            }
        ).encode()
