//! Decoding queue messages into the events a plugin receives, through the
//! SDK's wire codec (the same decoder the native test harness uses).

use mdp_sdk::wire::{self, WireError};

use crate::event::{BodyError, split_body};

use super::bindings::{AggWindow, Aggregate, Event, Luld, Quote, Raw, Trade};

/// Decode one queue message object (seed queue JSON) for a plugin.
pub fn decode(json: &str) -> Result<Event, WireError> {
    wire::decode_event(json).map(from_sdk)
}

/// Decode an already-parsed object whose exact text is `json`.
pub fn decode_value(value: &serde_json::Value, json: &str) -> Result<Event, WireError> {
    wire::decode_value(value, json).map(from_sdk)
}

/// Decode a queue message body (one event object, or a JSON array of them;
/// at most `max_bytes`) into the events a plugin receives, each with its
/// JSON text. An empty array decodes to no events.
pub fn decode_body(body: &[u8], max_bytes: usize) -> Result<Vec<(Event, String)>, BodyError> {
    split_body(body, max_bytes)?
        .into_iter()
        .map(|p| {
            decode_value(&p.value, &p.text)
                .map(|e| (e, p.text))
                .map_err(|_| BodyError::WrongShape)
        })
        .collect()
}

/// A pub/sub payload as a plugin event: `other` with the channel as kind.
pub fn pubsub(channel: &str, payload: &str) -> Event {
    Event::Other(Raw {
        kind: channel.to_string(),
        json: payload.to_string(),
    })
}

/// Move an SDK event into the host's binding type (same fields).
pub fn from_sdk(event: mdp_sdk::Event) -> Event {
    match event {
        mdp_sdk::Event::Trade(t) => Event::Trade(Trade {
            symbol: t.symbol,
            price: t.price,
            size: t.size,
            exchange: t.exchange,
            id: t.id,
            tape: t.tape,
            conditions: t.conditions,
            timestamp_ms: t.timestamp_ms,
            sequence: t.sequence,
        }),
        mdp_sdk::Event::Quote(q) => Event::Quote(Quote {
            symbol: q.symbol,
            bid_price: q.bid_price,
            bid_size: q.bid_size,
            bid_exchange: q.bid_exchange,
            ask_price: q.ask_price,
            ask_size: q.ask_size,
            ask_exchange: q.ask_exchange,
            condition: q.condition,
            indicators: q.indicators,
            timestamp_ms: q.timestamp_ms,
            sequence: q.sequence,
            tape: q.tape,
        }),
        mdp_sdk::Event::Aggregate(a) => Event::Aggregate(Aggregate {
            window: match a.window {
                mdp_sdk::AggWindow::Second => AggWindow::Second,
                mdp_sdk::AggWindow::Minute => AggWindow::Minute,
            },
            symbol: a.symbol,
            volume: a.volume,
            accumulated_volume: a.accumulated_volume,
            official_open_price: a.official_open_price,
            vwap: a.vwap,
            open: a.open,
            close: a.close,
            high: a.high,
            low: a.low,
            aggregate_vwap: a.aggregate_vwap,
            average_size: a.average_size,
            start_ms: a.start_ms,
            end_ms: a.end_ms,
            otc: a.otc,
        }),
        mdp_sdk::Event::Luld(l) => Event::Luld(Luld {
            symbol: l.symbol,
            high_price: l.high_price,
            low_price: l.low_price,
            indicators: l.indicators,
            tape: l.tape,
            timestamp_ns: l.timestamp_ns,
            sequence: l.sequence,
        }),
        mdp_sdk::Event::Other(r) => Event::Other(Raw {
            kind: r.kind,
            json: r.json,
        }),
    }
}
