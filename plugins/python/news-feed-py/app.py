"""news-feed in Python: the seed's FinlightDataAnalyzer,
the twin of plugins/news-feed and plugins/js/news-feed-js.

Every article goes, unchanged (Body.Input), onto the capped list
news:feed:latest and is published there; its tickers get it on
news:ticker:{SYM}. Enhanced articles (non-empty `companies`) name tickers
through US primary listings (XNYS, XASE, XNAS); raw ones through exchange
tags such as "(Nasdaq: ATOS)" or "( NYSE:GM )". Tickers are upper-cased and de-duplicated;
malformed ones are skipped and counted. The rules, reasons and counters are
exactly the Rust crate's, so all three pass the same golden file.
"""

import json
import re
from typing import Any, Dict, List, Optional, Tuple

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports import types as t

FEED_KEY = "news:feed:latest"
US_EXCHANGES = ("XNYS", "XASE", "XNAS")
# Python's \s in text, spelled as a class the Rust and JavaScript engines
# read alike (their own \s differ from it).
WS = r"[\t\n\x0b\x0c\r\x1c-\x1f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# The seed's \(\s*(?:nasdaq|nyse|amex)\s*:\s*([A-Z]{1,6})\s*\) (ignoring
# case), spelled out so Rust, Python and JavaScript engines agree exactly.
TAG = re.compile(
    rf"\({WS}*(?:[Nn][Aa][Ss][Dd][Aa][Qq]|[Nn][Yy][Ss][Ee]|[Aa][Mm][Ee][Xx])"
    rf"{WS}*:{WS}*([A-Za-z]{{1,6}}){WS}*\)"
)
TICKER_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-/")


def no_constants(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON (serde and JSON.parse agree)."""
    raise ValueError(f"{name} is not JSON")


def valid_ticker(s: str) -> bool:
    """1 to 16 ASCII letters, digits, '.', '-' or '/'."""
    return all(c in TICKER_CHARS for c in s) and 1 <= len(s) <= 16


def tickers(article: Dict[str, Any]) -> Tuple[List[str], int]:
    """The tickers an article is filed under, in order, and how many were skipped."""
    out: List[str] = []
    skipped = 0
    companies = article.get("companies")
    if isinstance(companies, list) and companies:
        for company in companies:
            listing = company.get("primaryListing") if isinstance(company, dict) else None
            if not isinstance(listing, dict):
                skipped += 1
                continue
            code = listing.get("exchangeCode")
            if not (isinstance(code, str) and code in US_EXCHANGES):
                continue
            ticker = None
            for v in (listing.get("ticker"), company.get("ticker")):
                if isinstance(v, str) and v:
                    ticker = v
                    break
            upper = ticker.upper() if ticker is not None else None
            if upper is not None and valid_ticker(upper):
                if upper not in out:
                    out.append(upper)
            else:
                skipped += 1
    else:
        def text(k: str) -> str:
            v = article.get(k)
            return v if isinstance(v, str) else ""

        for m in TAG.finditer(text("title") + " " + text("summary")):
            sym = m.group(1).upper()
            if sym not in out:
                out.append(sym)
    return out, skipped


def config_u32(config: List[Tuple[str, str]], key: str, default: int) -> int:
    value: Optional[str] = None
    for k, v in config:
        if k == key:
            value = v
    if value is None:
        return default
    try:
        n = int(value)
        if n < 0 or n > 0xFFFFFFFF:
            raise ValueError("out of range")
        return n
    except ValueError as e:
        raise Err(t.AnalyzerError_BadConfig(f"config `{key}` = `{value}`: {e}"))


class WitWorld(wit_world.WitWorld):
    feed_max = 10000
    ticker_max = 100
    feed_ttl = 172800
    ticker_ttl = 604800

    def describe(self) -> t.Info:
        return t.Info(name="news-feed-py", version="0.1.0", consumes=t.Kinds.OTHER, state_version=0)

    def init(self, config: List[Tuple[str, str]], state: Optional[bytes]) -> None:
        WitWorld.feed_max = config_u32(config, "news_feed_list_max", 10000)
        WitWorld.ticker_max = config_u32(config, "news_ticker_list_max", 100)
        WitWorld.feed_ttl = config_u32(config, "news_feed_cache_ttl", 172800)
        WitWorld.ticker_ttl = config_u32(config, "news_ticker_cache_ttl", 604800)

    def analyze(self, batch: List[t.Event]) -> List[t.Effect]:
        effects: List[t.Effect] = []
        articles = filed = skipped = 0
        for i, event in enumerate(batch):
            if not isinstance(event, t.Event_Other):
                effects.append(t.Effect_Reject(t.Reject(index=i, reason="not a news article")))
                continue
            try:
                article = json.loads(event.value.json, parse_constant=no_constants)
            except ValueError:
                effects.append(t.Effect_Reject(t.Reject(index=i, reason="news article is not JSON")))
                continue
            if article is None:
                continue
            if not isinstance(article, dict):
                effects.append(
                    t.Effect_Reject(t.Reject(index=i, reason="news article is not a JSON object"))
                )
                continue
            if not article:
                continue
            articles += 1
            body = t.Body_Input(i)
            effects.append(
                t.Effect_Push(t.Push(key=FEED_KEY, value=body, max_len=self.feed_max, ttl_secs=self.feed_ttl))
            )
            effects.append(t.Effect_Publish(t.Publish(channel=FEED_KEY, value=body)))
            found, bad = tickers(article)
            skipped += bad
            for sym in found:
                filed += 1
                key = f"news:ticker:{sym}"
                effects.append(
                    t.Effect_Push(t.Push(key=key, value=body, max_len=self.ticker_max, ttl_secs=self.ticker_ttl))
                )
                effects.append(t.Effect_Publish(t.Publish(channel=key, value=body)))
        host.counter("fda.processed", len(batch))
        if articles:
            host.counter("fda.articles", articles)
        if filed:
            host.counter("fda.ticker_articles", filed)
        if skipped:
            host.counter("fda.skipped_tickers", skipped)
        return effects

    def snapshot(self) -> bytes:
        return b""
