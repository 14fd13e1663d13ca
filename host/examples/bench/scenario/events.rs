//! Synthetic events as the Massive and Finlight listeners put them on the
//! queues (one JSON object per message, or a frame of them as one array), for
//! the scenarios that feed queues or analyzers directly.

use bytes::Bytes;

/// Distinct symbols the synthetic events cycle through.
pub const SYMBOLS: usize = 500;

/// The kinds of event the shipped analyzers consume.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `Q` on the `quotes` queue (massive-router).
    Quote,
    /// `A` on the `aggregate` queue (leaderboard).
    Aggregate,
    /// `T` on the `trades` queue (top-trades).
    Trade,
    /// A Finlight article on the `news` queue (news-feed).
    Article,
}

impl Kind {
    /// Event `i` of this kind, as JSON text.
    pub fn json(self, i: usize) -> String {
        let s = i % SYMBOLS;
        match self {
            Kind::Quote => format!(
                r#"{{"event_type":"Q","symbol":"S{s}","bid_exchange_id":4,"bid_price":1.5,"bid_size":1,"ask_exchange_id":7,"ask_price":1.6,"ask_size":1,"condition":0,"indicators":[],"timestamp":{i},"sequence_number":{i},"tape":3}}"#
            ),
            Kind::Aggregate => {
                let close = 10.0 + (i % 97) as f64 / 10.0;
                format!(
                    r#"{{"event_type":"A","symbol":"S{s}","volume":100,"accumulated_volume":{i},"official_open_price":10.0,"vwap":{close},"open":{close},"close":{close},"high":{close},"low":{close},"aggregate_vwap":{close},"average_size":10,"start_timestamp":{i},"end_timestamp":{e},"otc":false}}"#,
                    e = i + 1000
                )
            }
            Kind::Trade => format!(
                r#"{{"event_type":"T","symbol":"S{s}","exchange":4,"id":"{i}","tape":3,"price":{p},"size":{z},"conditions":[12],"timestamp":{i},"sequence_number":{i},"trf_id":null,"trf_timestamp":null}}"#,
                p = 10.0 + (i % 89) as f64 / 100.0,
                z = 1 + i % 500
            ),
            Kind::Article => format!(
                r#"{{"link":"https://news.example/markets/s{s}-shares-rise-{i}/","title":"S{s} shares rise as traders weigh the outlook","publishDate":"2026-01-05T15:00:00.000Z","createdAt":"2026-01-05T15:00:30.000Z","source":"news.example","language":"en","summary":"Shares of S{s} Corp. (NASDAQ: S{s}) rise in active trading.","images":[],"sentiment":"positive","confidence":0.7,"categories":["markets"],"countries":["US"],"content":null,"companies":[{{"companyId":{s},"name":"S{s} Corp.","ticker":"S{s}","country":"US","exchange":"NASDAQ","primaryListing":{{"ticker":"S{s}","exchangeCode":"XNAS","exchangeCountry":"US"}},"otherListings":[]}}]}}"#
            ),
        }
    }

    /// Messages carrying events `0..n`: one event each (`frame` 1), or JSON
    /// arrays of `frame` events as a frame-batching listener publishes them.
    pub fn messages(self, n: usize, frame: usize) -> Vec<Bytes> {
        let frame = frame.max(1);
        (0..n)
            .step_by(frame)
            .map(|start| {
                let end = (start + frame).min(n);
                if frame == 1 {
                    Bytes::from(self.json(start))
                } else {
                    let items: Vec<String> = (start..end).map(|i| self.json(i)).collect();
                    Bytes::from(format!("[{}]", items.join(",")))
                }
            })
            .collect()
    }

    /// The store key (a string or the head of a list) where event `i`
    /// shows once the kind's analyzer applied it.
    pub fn applied_key(self, i: usize) -> String {
        let s = i % SYMBOLS;
        match self {
            Kind::Quote => format!("stocks:quotes:S{s}"),
            Kind::Aggregate => format!("quote:S{s}"),
            Kind::Trade => format!("tta:S{s}:recent"),
            Kind::Article => "news:feed:latest".into(),
        }
    }

    /// Whether `text` (the value at [`Kind::applied_key`]) shows event `i`.
    pub fn shows(self, text: &str, i: usize) -> bool {
        let field = match self {
            Kind::Quote | Kind::Trade => "timestamp",
            Kind::Aggregate => "accumulated_volume",
            Kind::Article => return text.contains(&format!("-rise-{i}/")),
        };
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get(field).and_then(serde_json::Value::as_u64))
            == Some(i as u64)
    }
}
