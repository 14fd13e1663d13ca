//! `leaderboard`: the seed's LeaderboardAnalyzer on the
//! `aggregate` queue, with the seed's keys, channels, TTLs and JSON fields.
//!
//! Per aggregate event it computes the 26-field quote and puts + publishes it
//! on `quote:{SYM}` (TTL 4 days). Per batch it updates the three cluster-wide
//! sorted sets `leaderboard:top_volume|top_gappers|top_gainers` (top 500) and
//! the hashes `symbol:{SYM}:data` (TTL 1 h). At most once per second across
//! all replicas (`cache::try_acquire("leaderboard:last_publish")`) it builds
//! the boards `scanners:top_volume|top_gappers|top_gainers` (TTL 4 days) from
//! the sorted sets and hashes, as the seed does.
//!
//! State kept in the plugin (no per-event round trips): reference data per
//! symbol (ticker snapshot, average volume, free float; fetched once per
//! symbol per trading day through the host's cache-aside layer) and the open
//! baseline per symbol (`symbol:{SYM}:open_price`, read once per symbol per
//! segment with one `get-many` per batch).
//!
//! Deliberate fixes of the seed:
//! - the trading day starts at 04:00 America/New_York, DST-correct (the seed
//!   anchored at 04:00 of *today's* date, so it reset at midnight);
//! - every replica derives both resets (04:00 day boundary, 09:30 open) from
//!   the host clock and clears its own state; the shared sorted sets are
//!   cleared once (try-acquire guarded);
//! - open baselines written before 09:30 expire at 09:30 and those written
//!   after expire at the next 04:00, so no replica can read a stale baseline
//!   after a reset (the seed had to SCAN and delete them);
//! - the 09:30 reset also fires when the first event of the day after 09:30
//!   arrives later than 09:30:59 (the seed skipped the reset then);
//! - reference data that is unavailable is retried after 30 s, the quote is
//!   still published with the seed's fallbacks (the seed rejected the event);
//! - aggregates without a positive close are rejected with a reason.
//!
//! Config: `board_size` (default 500), `publish_every_ms` (default 1000),
//! `hash_every_ms` (default 1000: how often a replica refreshes a symbol's
//! `symbol:{SYM}:data` hash; the seed wrote it on every event, but only the
//! once-a-second boards read it), `boards_on_idle` (default false: boards
//! and hashes are built on the batch that wins the once-a-second election;
//! true: on the host's idle tick after a burst — the manifest's
//! `idle_tick_ms` — so the burst's quotes do not wait for them, and on a
//! batch only when no tick came for two publish periods).

use std::collections::{BTreeMap, HashMap};

use mdp_sdk::calendar::{TradingDay, trading_day};
use mdp_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod board;
mod quote;
pub use board::{Row, SeedValue, seed_value};
pub use quote::py_float;
use quote::{Field, QuoteFields};

/// TTL of `quote:{SYM}` and `scanners:*` (4 days).
pub const QUOTE_TTL: u32 = 345_600;
/// TTL of `symbol:{SYM}:data` (1 h).
pub const SYMBOL_TTL: u32 = 3_600;
/// Longest TTL of `symbol:{SYM}:open_price` (1 day).
pub const OPEN_PRICE_TTL: u32 = 86_400;
/// The key holding the current trading day's 04:00 ET anchor (Unix seconds).
pub const DAY_KEY: &str = "leaderboard:market:current_day_start";
/// The cluster-wide publish election key.
pub const PUBLISH_KEY: &str = "leaderboard:last_publish";
/// How long unavailable reference data is not asked for again, µs.
const REFERENCE_RETRY_US: u64 = 30_000_000;

/// The three boards: (sorted set, published key, score field).
pub const BOARDS: [(&str, &str, &str); 3] = [
    (
        "leaderboard:top_volume",
        "scanners:top_volume",
        "accumulated_volume",
    ),
    (
        "leaderboard:top_gappers",
        "scanners:top_gappers",
        "pct_change",
    ),
    (
        "leaderboard:top_gainers",
        "scanners:top_gainers",
        "pct_change_since_open",
    ),
];

/// Reference data of one symbol, as the quote needs it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Reference {
    /// The snapshot has a previous-day bar (`prevDay`): its values are
    /// used as they are, 0 included. Without one the seed falls back to the
    /// event's close, volume and vwap.
    prev_day: bool,
    prev_close: f64,
    prev_open: f64,
    prev_high: f64,
    prev_low: f64,
    prev_volume: f64,
    prev_vwap: f64,
    avg_volume: f64,
    free_float: f64,
    /// Set when some of it was unavailable: ask again after this time (µs).
    retry_at_us: Option<u64>,
}

/// An aggregate the quote can be computed from: a symbol and a positive close.
fn usable(a: &Aggregate) -> bool {
    a.close.is_finite() && a.close > 0.0 && !a.symbol.is_empty()
}

/// In-memory state handed to the next generation on hot reload.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    anchor: i64,
    after_open: bool,
    /// Anchor of the trading day whose 09:30 reset this replica applied.
    open_reset_anchor: i64,
    reference: HashMap<String, Reference>,
    open_price: HashMap<String, f64>,
}

/// This replica's latest quote of a symbol.
struct Known {
    quote: QuoteFields,
    /// When it was computed (host clock, µs).
    at_us: u64,
    /// When this replica last wrote the symbol's hash, µs.
    written_us: Option<u64>,
    /// The quote is not in the hash yet.
    pending: bool,
}

/// The analyzer.
pub struct Leaderboard {
    board_size: u32,
    publish_every_ms: u32,
    hash_every_us: u64,
    /// Latest quote per symbol this replica computed, with its hash state.
    known: HashMap<String, Known>,
    /// Boards and hashes wait for the host's idle tick (`boards_on_idle`).
    boards_on_idle: bool,
    /// Scores since the last boards (with `boards_on_idle`).
    since_boards: BTreeMap<String, [f64; 3]>,
    /// When boards and hashes were last due (with `boards_on_idle`), µs.
    last_work_us: u64,
    state: State,
}

impl Leaderboard {
    /// Reference data for `symbol`, from memory or the host (once per day,
    /// again 30 s after a failure).
    fn reference(&mut self, symbol: &str, now_us: u64) -> Reference {
        if let Some(r) = self.state.reference.get(symbol)
            && r.retry_at_us.is_none_or(|t| now_us < t)
        {
            return *r;
        }
        let mut r = Reference::default();
        let mut failed = Vec::new();
        match reference::ticker_snapshot(symbol) {
            Ok(Some(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(snap) => {
                    let prev = &snap["prevDay"];
                    r.prev_day = prev.is_object();
                    let f = |k: &str| prev[k].as_f64().filter(|x| x.is_finite()).unwrap_or(0.0);
                    r.prev_close = f("c");
                    r.prev_open = f("o");
                    r.prev_high = f("h");
                    r.prev_low = f("l");
                    r.prev_volume = f("v");
                    r.prev_vwap = f("vw");
                }
                Err(e) => failed.push(format!("snapshot is not JSON: {e}")),
            },
            Ok(None) => {}
            Err(e) => failed.push(format!("snapshot: {e:?}")),
        }
        match reference::avg_volume(symbol) {
            Ok(v) if v.is_finite() => r.avg_volume = v,
            Ok(_) => {}
            Err(e) => failed.push(format!("avg volume: {e:?}")),
        }
        match reference::free_float(symbol) {
            Ok(v) if v.is_finite() => r.free_float = v,
            Ok(_) => {}
            Err(e) => failed.push(format!("free float: {e:?}")),
        }
        if !failed.is_empty() {
            r.retry_at_us = Some(now_us + REFERENCE_RETRY_US);
            host::counter("lba.reference_unavailable", 1);
            host::log(
                Level::Warn,
                &format!(
                    "{symbol}: reference data unavailable ({})",
                    failed.join("; ")
                ),
            );
        }
        self.state.reference.insert(symbol.to_string(), r);
        r
    }

    fn quote(&mut self, a: &Aggregate, open: f64, now_us: u64) -> QuoteFields {
        let r = self.reference(&a.symbol, now_us);
        // As the seed: the previous-day bar's values when the snapshot has
        // one (a new listing's zeros included), else the event's.
        let (prev_close, prev_volume, prev_vwap) = if r.prev_day {
            (r.prev_close, Field::whole(r.prev_volume), r.prev_vwap)
        } else {
            (a.close, Field::Int(a.volume), a.vwap)
        };
        let change = if prev_close > 0.0 {
            a.close - prev_close
        } else {
            0.0
        };
        let pct_change = if prev_close > 0.0 {
            change / prev_close * 100.0
        } else {
            0.0
        };
        let change_since_open = if open > 0.0 { a.close - open } else { 0.0 };
        let pct_change_since_open = if open > 0.0 {
            change_since_open / open * 100.0
        } else {
            0.0
        };
        let relative_volume = if r.avg_volume > 0.0 {
            a.accumulated_volume as f64 / r.avg_volume
        } else {
            0.0
        };
        // Timestamps fall back to each other, then to the host clock.
        let now_ms = now_us / 1000;
        let end = if a.end_ms > 0 { a.end_ms } else { a.start_ms };
        let end = if end > 0 { end } else { now_ms };
        let start = if a.start_ms > 0 { a.start_ms } else { end };
        use Field::{Float, Int, Text};
        QuoteFields(vec![
            ("symbol", Text(a.symbol.clone())),
            ("volume", Int(a.volume)),
            ("free_float", Field::whole(r.free_float)),
            ("accumulated_volume", Int(a.accumulated_volume)),
            ("relative_volume", Float(relative_volume)),
            ("official_open_price", Float(a.official_open_price)),
            ("vwap", Float(a.vwap)),
            // The day's baseline, not the bar's own open (as the seed).
            ("open", Float(open)),
            ("close", Float(a.close)),
            ("high", Float(a.high)),
            ("low", Float(a.low)),
            ("aggregate_vwap", Float(a.aggregate_vwap)),
            ("average_size", Field::whole(a.average_size)),
            ("avg_volume", Float(r.avg_volume)),
            ("prev_day_close", Float(prev_close)),
            ("prev_day_open", Float(r.prev_open)),
            ("prev_day_high", Float(r.prev_high)),
            ("prev_day_low", Float(r.prev_low)),
            ("prev_day_volume", prev_volume),
            ("prev_day_vwap", Float(prev_vwap)),
            ("change", Float(change)),
            ("pct_change", Float(pct_change)),
            ("change_since_open", Float(change_since_open)),
            ("pct_change_since_open", Float(pct_change_since_open)),
            ("start_timestamp", Int(start)),
            ("end_timestamp", Int(end)),
        ])
    }

    /// Day boundary and 09:30 resets: every replica clears its own state
    /// (derived from the clock); the shared sorted sets are cleared once.
    fn resets(&mut self, seg: &TradingDay, now_us: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let now_s = (now_us / 1_000_000) as i64;
        // Until the next day boundary (plus an hour of slack), in ms.
        let rest_of_day_ms = ((seg.next_anchor - now_s).max(0) as u64 * 1000 + 3_600_000)
            .min(u64::from(u32::MAX)) as u32;
        if seg.anchor != self.state.anchor {
            self.state.anchor = seg.anchor;
            self.state.reference.clear();
            self.state.open_price.clear();
            self.state.after_open = seg.after_open;
            let stored =
                cache::get(DAY_KEY).and_then(|s| s.trim().trim_matches('"').parse::<i64>().ok());
            if stored.is_none_or(|s| s < seg.anchor)
                && cache::try_acquire(
                    &format!("leaderboard:market:day_reset:{}", seg.anchor),
                    rest_of_day_ms,
                )
            {
                host::log(
                    Level::Info,
                    &format!("day boundary {}: clearing the boards", seg.date),
                );
                effects.push(del(BOARDS.iter().map(|(z, _, _)| z.to_string()).collect()));
                effects.push(put(DAY_KEY, Body::Json(seg.anchor.to_string()), None));
            }
        }
        if seg.after_open != self.state.after_open {
            // Crossed 09:30: baselines start again from the next bar.
            self.state.after_open = seg.after_open;
            self.state.open_price.clear();
        }
        if seg.after_open && self.state.open_reset_anchor != seg.anchor {
            self.state.open_reset_anchor = seg.anchor;
            let key = format!("leaderboard:market:open_reset:{}", seg.date);
            if cache::try_acquire(&key, rest_of_day_ms) {
                host::log(
                    Level::Info,
                    &format!("market open {}: clearing top gainers", seg.date),
                );
                effects.push(del(vec![BOARDS[2].0.to_string()]));
            }
        }
        effects
    }

    /// Open baselines for the batch's symbols: memory, else the store (one
    /// `get-many`), else the event's open (or close), which is then stored.
    fn open_prices(&mut self, batch: &[Event], seg: &TradingDay, now_us: u64) -> Vec<Effect> {
        let mut missing: Vec<&str> = batch
            .iter()
            .filter_map(|e| match e {
                Event::Aggregate(a) if !self.state.open_price.contains_key(&a.symbol) => {
                    Some(a.symbol.as_str())
                }
                _ => None,
            })
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = missing
            .iter()
            .map(|s| format!("symbol:{s}:open_price"))
            .collect();
        for (symbol, value) in missing.iter().zip(cache::get_many(&keys)) {
            if let Some(p) = value.and_then(|v| v.trim().trim_matches('"').parse::<f64>().ok())
                && p.is_finite()
                && p > 0.0
            {
                self.state.open_price.insert(symbol.to_string(), p);
            }
        }
        // A baseline lives until the next reset: 09:30, then the next 04:00.
        let now_s = (now_us / 1_000_000) as i64;
        let until = if seg.after_open {
            seg.next_anchor
        } else {
            seg.open_at
        };
        let ttl = (until - now_s).clamp(0, i64::from(OPEN_PRICE_TTL)) as u32;
        let mut effects = Vec::new();
        for e in batch {
            let Event::Aggregate(a) = e else { continue };
            if self.state.open_price.contains_key(&a.symbol) || !usable(a) {
                continue;
            }
            let open = if a.open > 0.0 { a.open } else { a.close };
            self.state.open_price.insert(a.symbol.clone(), open);
            if ttl > 0 {
                effects.push(put(
                    format!("symbol:{}:open_price", a.symbol),
                    Body::Json(py_float(open)),
                    Some(ttl),
                ));
            }
        }
        effects
    }

    /// Keep `quote` as this replica's latest for `symbol`, due for its hash.
    fn remember(&mut self, symbol: &str, quote: QuoteFields, now_us: u64) {
        match self.known.get_mut(symbol) {
            Some(k) => {
                k.quote = quote;
                k.at_us = now_us;
                k.pending = true;
            }
            None => {
                self.known.insert(
                    symbol.to_string(),
                    Known {
                        quote,
                        at_us: now_us,
                        written_us: None,
                        pending: true,
                    },
                );
            }
        }
    }

    /// Write the `symbol:{SYM}:data` hashes that are due. The hashes only
    /// feed the boards (built at most once per `publish_every_ms`), so a
    /// symbol's hash is refreshed at most every `hash_every_ms`; its latest
    /// quote waits in memory until then (and the boards of this replica
    /// read it from there).
    fn flush_hashes(&mut self, now_us: u64, every: u64) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (s, k) in &mut self.known {
            let due = k.pending
                && k.written_us
                    .is_none_or(|t| now_us.saturating_sub(t) >= every);
            if due {
                k.written_us = Some(now_us);
                k.pending = false;
                effects.push(hset(
                    format!("symbol:{s}:data"),
                    k.quote.hash(),
                    Some(SYMBOL_TTL),
                ));
            }
        }
        effects.sort_by(|a, b| match (a, b) {
            (Effect::Hset(a), Effect::Hset(b)) => a.key.cmp(&b.key),
            _ => std::cmp::Ordering::Equal,
        });
        effects
    }

    /// The row a board shows for `symbol`: this replica's quote when it is
    /// not yet in the hash or no older than `hash_every_ms` (the hash itself
    /// lags by up to that much), else the store's hash.
    fn board_row(&self, symbol: &str, now_us: u64) -> Row {
        if let Some(k) = self.known.get(symbol)
            && (k.pending || now_us.saturating_sub(k.at_us) <= self.hash_every_us)
        {
            return k.quote.row();
        }
        Row::from_hash(&cache::hgetall(&format!("symbol:{symbol}:data")))
    }

    /// The boards from the shared sorted sets merged with this batch's
    /// scores (`latest`, not yet written). `cleared` are the sorted sets this
    /// batch deletes (read as empty).
    fn boards(
        &self,
        latest: &BTreeMap<String, [f64; 3]>,
        cleared: &[String],
        now_us: u64,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let tops: Vec<Vec<(String, f64)>> = BOARDS
            .iter()
            .enumerate()
            .map(|(b, (z, _, _))| {
                let mut top: HashMap<String, f64> = if cleared.iter().any(|c| c == z) {
                    HashMap::new()
                } else {
                    cache::ztop(z, self.board_size).into_iter().collect()
                };
                for (s, scores) in latest {
                    top.insert(s.clone(), scores[b]);
                }
                let mut top: Vec<(String, f64)> = top.into_iter().collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
                top.truncate(self.board_size as usize);
                top
            })
            .collect();
        let mut rows: HashMap<&str, Row> = HashMap::new();
        for (symbol, _) in tops.iter().flatten() {
            if !rows.contains_key(symbol.as_str()) {
                let row = self.board_row(symbol, now_us);
                rows.insert(symbol.as_str(), row);
            }
        }
        for ((_, key, field), top) in BOARDS.iter().zip(&tops) {
            let entries = top.iter().enumerate().filter_map(|(n, (symbol, score))| {
                let row = rows.get(symbol.as_str()).filter(|r| !r.is_empty())?;
                Some((n + 1, symbol.as_str(), *score, row))
            });
            let board = board::board_json(field, entries);
            if board.len() > 2 {
                effects.extend(put_and_publish(key, Body::Json(board), Some(QUOTE_TTL)));
            }
        }
        host::counter("lba.published", effects.len() as u64 / 2);
        effects
    }

    /// With `boards_on_idle`: the boards and hashes of everything since the
    /// last time, on an idle tick (`tick`, an empty batch) or, when no tick
    /// came for two publish periods, on this batch. The periods get a tenth
    /// of slack, as ticks come once per burst rather than on a timer.
    fn deferred_work(
        &mut self,
        tick: bool,
        latest: BTreeMap<String, [f64; 3]>,
        cleared: &[String],
        now_us: u64,
    ) -> Vec<Effect> {
        self.since_boards.extend(latest);
        let period_us = u64::from(self.publish_every_ms) * 1000;
        if self.last_work_us == 0 {
            // The periods count from the first batch.
            self.last_work_us = now_us;
        }
        if !tick && now_us.saturating_sub(self.last_work_us) < 2 * period_us {
            return Vec::new();
        }
        self.last_work_us = now_us;
        let mut effects = Vec::new();
        // Scores since the last boards, whose sorted-set writes may still be
        // in flight; when another replica wins the election, its boards read
        // them from the sorted sets.
        let latest = std::mem::take(&mut self.since_boards);
        if !latest.is_empty() && cache::try_acquire(PUBLISH_KEY, self.publish_every_ms * 9 / 10) {
            effects.extend(self.boards(&latest, cleared, now_us));
        }
        effects.extend(self.flush_hashes(now_us, self.hash_every_us * 9 / 10));
        effects
    }
}

impl Analyzer for Leaderboard {
    fn describe() -> Info {
        mdp_sdk::info(
            "leaderboard",
            env!("CARGO_PKG_VERSION"),
            Kinds::AGGREGATE | Kinds::OTHER,
            // 3: reference data records whether the snapshot had a prevDay.
            3,
        )
    }

    fn init(config: Config, state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        let state = state
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_slice(&s).ok())
            .unwrap_or_default();
        Ok(Leaderboard {
            board_size: config.parse_or("board_size", 500)?,
            publish_every_ms: config.parse_or("publish_every_ms", 1000)?,
            hash_every_us: config.parse_or::<u64>("hash_every_ms", 1000)? * 1000,
            known: HashMap::new(),
            boards_on_idle: config.parse_or("boards_on_idle", false)?,
            since_boards: BTreeMap::new(),
            last_work_us: 0,
            state,
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let now_us = host::now_us();
        let seg = trading_day(now_us);
        let mut effects = self.resets(&seg, now_us);
        let cleared: Vec<String> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Del(keys) => Some(keys.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        effects.extend(self.open_prices(batch, &seg, now_us));
        // Latest scores per symbol in this batch, for the sorted sets and
        // boards; every event's quote is published, the latest is remembered
        // for the hashes and boards.
        let mut latest: BTreeMap<String, [f64; 3]> = BTreeMap::new();
        for (i, event) in batch.iter().enumerate() {
            let Event::Aggregate(a) = event else {
                let kind = match event {
                    Event::Other(raw) => raw.kind.as_str(),
                    _ => "a non-aggregate type",
                };
                effects.push(reject(
                    i,
                    format!("not an aggregate (event_type `{kind}`) or missing required fields"),
                ));
                continue;
            };
            if !usable(a) {
                effects.push(reject(
                    i,
                    format!("{}: aggregate without a positive close", a.symbol),
                ));
                continue;
            }
            let open = self
                .state
                .open_price
                .get(&a.symbol)
                .copied()
                .unwrap_or(a.close);
            let q = self.quote(a, open, now_us);
            effects.extend(put_and_publish(
                &format!("quote:{}", a.symbol),
                Body::Json(q.json()),
                Some(QUOTE_TTL),
            ));
            latest.insert(a.symbol.clone(), BOARDS.map(|(_, _, field)| q.score(field)));
            self.remember(&a.symbol, q, now_us);
        }
        if !latest.is_empty() {
            for (b, (zset, _, _)) in BOARDS.iter().enumerate() {
                let members = latest
                    .iter()
                    .map(|(s, scores)| (s.clone(), scores[b]))
                    .collect();
                effects.push(zadd(*zset, members, Some(self.board_size), None));
            }
        }
        if self.boards_on_idle {
            effects.extend(self.deferred_work(batch.is_empty(), latest, &cleared, now_us));
        } else {
            if !latest.is_empty() && cache::try_acquire(PUBLISH_KEY, self.publish_every_ms) {
                effects.extend(self.boards(&latest, &cleared, now_us));
            }
            effects.extend(self.flush_hashes(now_us, self.hash_every_us));
        }
        host::counter("lba.processed", batch.len() as u64);
        Ok(effects)
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }
}

export_analyzer!(Leaderboard);

#[cfg(test)]
mod tests;
