//! The properties the parsers of untrusted input must keep, in one place
//! for the cargo-fuzz targets (`host/fuzz`) and the seeded run of the test
//! suite (`tests/all/fuzz.rs`).
//!
//! Each check takes arbitrary bytes and panics when a property breaks:
//! the parser never panics; what it accepts re-serializes to text it parses
//! back to the same value (where the parser has a serialized form); what it
//! refuses it refuses with a typed error that agrees with the input.
//!
//! [`Target::run`] drives a check with a deterministic generator: real
//! sample inputs ([`Target::seeds`]) mutated by a small xorshift PRNG, so a
//! failing case is reproduced by its seed and index alone.

use serde_json::Value;

use crate::event::{BodyError, MARKET_QUEUES};
use crate::feed::{finlight, massive};
use crate::plugin::convert;
use crate::plugin::manifest::Manifest;
use crate::widgets::protocol::{self, Request};

/// What a check saw its parser do with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Parsed, and every property of a parsed input held.
    Accepted,
    /// Refused with a typed error that agrees with the input.
    Refused,
}

/// The input as text, as a WebSocket text frame or a file would carry it.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Whether `text` is JSON at all.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok()
}

/// The Massive frame parser ([`massive::parse_frame`]): a parsed frame
/// routes only to known queues, never yields more events and statuses than
/// the frame holds items, and every routed event is a queue message the
/// processor decodes into exactly one event.
pub fn massive_frame(data: &[u8]) -> Verdict {
    let text = text(data);
    match massive::parse_frame(&text) {
        Ok(frame) => {
            let items = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(a)) => a.len(),
                Ok(Value::Object(_)) => 1,
                other => panic!("accepted a frame that is not an array or object: {other:?}"),
            };
            let routed: usize = frame.routed.values().map(Vec::len).sum();
            assert!(routed + frame.statuses.len() <= items, "{text}");
            for (queue, events) in &frame.routed {
                assert!(MARKET_QUEUES.contains(queue), "unknown queue {queue}");
                for event in events {
                    assert!(event.is_object(), "{event}");
                    let body = event.to_string();
                    let decoded = convert::decode_body(body.as_bytes(), usize::MAX)
                        .unwrap_or_else(|e| panic!("the processor refuses {body}: {e}"));
                    assert_eq!(decoded.len(), 1, "{body}");
                }
            }
            Verdict::Accepted
        }
        Err(massive::FrameError::TooLarge(n)) => {
            assert!(n > massive::MAX_FRAME_BYTES && n == text.len());
            Verdict::Refused
        }
        Err(massive::FrameError::NotJson(m)) => {
            assert!(!m.is_empty() && !is_json(&text), "{text}");
            Verdict::Refused
        }
        Err(massive::FrameError::WrongShape) => {
            assert!(is_json(&text), "{text}");
            Verdict::Refused
        }
    }
}

/// The Finlight frame parser ([`finlight::parse_frame`]): a parsed message
/// re-serializes ([`finlight::ServerMessage::to_frame`]) to a frame that
/// parses back to it; only frames that are not JSON objects, or articles
/// without an object `data`, are refused.
pub fn finlight_frame(data: &[u8]) -> Verdict {
    let text = text(data);
    let value = serde_json::from_str::<Value>(&text).ok();
    match finlight::parse_frame(&text) {
        Ok(msg) => {
            let frame = msg.to_frame().to_string();
            assert_eq!(finlight::parse_frame(&frame), Ok(msg), "{text} → {frame}");
            Verdict::Accepted
        }
        Err(finlight::ServerFrameError::NotAnObject) => {
            assert!(!value.is_some_and(|v| v.is_object()), "{text}");
            Verdict::Refused
        }
        Err(finlight::ServerFrameError::ArticleWithoutData) => {
            let v = value.unwrap_or_else(|| panic!("not JSON, yet read as an article: {text}"));
            assert_eq!(v["action"], "sendArticle", "{text}");
            assert!(!v["data"].is_object(), "{text}");
            Verdict::Refused
        }
    }
}

/// The widget protocol's client-frame parser ([`protocol::parse_request`]):
/// a parsed request re-serializes ([`Request::to_frame`]) to a frame that
/// parses back to it, a `get` always names a key, and only frames that are
/// not JSON are refused.
pub fn widget_request(data: &[u8]) -> Verdict {
    let text = text(data);
    match protocol::parse_request(&text) {
        Ok(request) => {
            if let Request::Get { cache, .. } = &request {
                assert!(!cache.is_empty(), "{text}");
            }
            let frame = request.to_frame().to_string();
            assert_eq!(
                protocol::parse_request(&frame),
                Ok(request),
                "{text} → {frame}"
            );
            Verdict::Accepted
        }
        Err(protocol::RequestError::NotJson(m)) => {
            assert!(!m.is_empty() && !is_json(&text), "{text}");
            Verdict::Refused
        }
    }
}

/// The plugin manifest parser ([`Manifest::parse`]): a parsed manifest
/// serializes ([`Manifest::to_toml`]) to TOML that parses back to it; a
/// refusal says why.
pub fn manifest(data: &[u8]) -> Verdict {
    let text = text(data);
    match Manifest::parse(&text) {
        Ok(manifest) => {
            let toml = manifest
                .to_toml()
                .unwrap_or_else(|e| panic!("{manifest:?} does not serialize: {e}"));
            assert_eq!(Manifest::parse(&toml), Ok(manifest), "{text} → {toml}");
            Verdict::Accepted
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "{text}");
            Verdict::Refused
        }
    }
}

/// The largest queue body [`queue_body`] accepts (small, so the size limit
/// is exercised too).
pub const QUEUE_BODY_LIMIT: usize = 4096;

/// The queue-message decoder ([`convert::decode_body`]): one event per
/// object of an array body, or one for a lone object or scalar (the seed
/// listener's raw mode publishes JSON strings), whose text is the body
/// itself; each event's text decodes alone to the same event; a refusal
/// agrees with the body (too large, not JSON, or an array holding more than
/// objects).
pub fn queue_body(data: &[u8]) -> Verdict {
    match convert::decode_body(data, QUEUE_BODY_LIMIT) {
        Ok(events) => {
            let value: Value = serde_json::from_slice(data).expect("accepted JSON");
            match &value {
                Value::Array(items) => assert_eq!(events.len(), items.len()),
                _ => {
                    assert_eq!(events.len(), 1);
                    assert_eq!(events[0].1.as_bytes(), data, "a lone event keeps its text");
                }
            }
            for (event, text) in &events {
                let again = convert::decode_body(text.as_bytes(), usize::MAX)
                    .unwrap_or_else(|e| panic!("{text} does not decode alone: {e}"));
                assert_eq!(again.len(), 1, "{text}");
                assert_eq!(format!("{:?}", again[0].0), format!("{event:?}"), "{text}");
                assert_eq!(&again[0].1, text);
            }
            Verdict::Accepted
        }
        Err(BodyError::TooLarge { len, max }) => {
            assert!(len == data.len() && len > max && max == QUEUE_BODY_LIMIT);
            Verdict::Refused
        }
        Err(BodyError::NotJson(m)) => {
            assert!(!m.is_empty() && serde_json::from_slice::<Value>(data).is_err());
            Verdict::Refused
        }
        Err(BodyError::WrongShape) => {
            let value: Value = serde_json::from_slice(data).expect("refused as wrong shape: JSON");
            let events = match &value {
                Value::Array(items) => items.iter().all(Value::is_object),
                _ => true,
            };
            assert!(!events, "refused a body of events");
            Verdict::Refused
        }
    }
}

/// A fuzz target: its check and what the seeded generator mutates.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name (the cargo-fuzz target's).
    pub name: &'static str,
    /// The property check.
    pub check: fn(&[u8]) -> Verdict,
    /// Real sample inputs.
    pub seeds: &'static [&'static str],
    /// Bytes the mutations insert (the syntax of the input's format).
    pub alphabet: &'static [u8],
}

const JSON_ALPHABET: &[u8] = b"[]{}\",:.-+0123456789eEtruefalsnl \\u";

/// Every target, with samples of each protocol (from the tests and the
/// shipped plugins).
pub const TARGETS: [Target; 5] = [
    Target {
        name: "massive_frame",
        check: massive_frame,
        seeds: &[
            r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
            r#"[{"ev":"T","sym":"MSFT","x":4,"i":"12345","z":3,"p":114.125,"s":100,"c":[0,12],"t":1536036818784,"q":3681328}]"#,
            r#"[{"ev":"Q","sym":"MSFT","bx":4,"bp":114.125,"bs":100,"ax":7,"ap":114.128,"as":160,"c":0,"i":[604],"t":1536036818784,"q":50385480,"z":3}]"#,
            r#"[{"ev":"A","sym":"FCX","v":4989,"av":4332125,"op":75.98,"vw":78.0894,"o":78.1,"c":78.08,"h":78.125,"l":78.07,"a":76.8404,"z":62,"s":1788877043000,"e":1788877044000,"dv":"4989.0"},{"ev":"LULD","h":3.63,"l":2.97,"i":[15],"z":3,"T":"ATHR","t":1788877046310003385,"q":3209681},{"ev":"NOI","T":"NTEST.Q","t":1601318039223013600,"at":930,"a":"M","i":44,"x":10,"o":480,"p":440,"b":25.03}]"#,
        ],
        alphabet: b"[]{}\",:.-0123456789eEtruefalsnl evTQAMsympxLULDNOI\\u",
    },
    Target {
        name: "finlight_frame",
        check: finlight_frame,
        seeds: &[
            r#"{"action":"admit","leaseId":"lease-1","serverNow":1770127500000,"clientNonce":"0b0e7c1e-4a43-4c1e-9d0e-4e2f8f5a1c3d"}"#,
            r#"{"action":"sendArticle","data":{"link":"https://www.reuters.com/markets/us/nvidia-2026-02-03/","title":"Nvidia shares rise","publishDate":"2026-02-03T14:05:00.000Z","createdAt":"2026-02-03T14:05:41.120Z","source":"www.reuters.com","language":"en","summary":"…","images":["https://x/img.jpg"],"sentiment":"positive","confidence":0.9731,"categories":["markets","technology"],"countries":["US"],"companies":[{"companyId":8741,"name":"NVIDIA Corporation","ticker":"NVDA","confidence":"0.9912","country":"US","exchange":"NASDAQ","primaryListing":{"ticker":"NVDA","exchangeCode":"XNAS","exchangeCountry":"US"},"otherListings":[]}]}}"#,
            r#"{"action":"pong","t":1770127500000}"#,
            r#"{"action":"preempted","reason":"takeover","newLeaseId":"lease-2"}"#,
            r#"{"action":"admin_kick","retryAfter":900000}"#,
            r#"{"action":"error","data":"rate limit exceeded"}"#,
            r#"{"action":"error","error":{"code":"blocked"}}"#,
            r#"{"action":"subscribed"}"#,
        ],
        alphabet: b"[]{}\",:.-0123456789eEtruefalsnl actionadmitsendArticledatapongerror\\u",
    },
    Target {
        name: "widget_request",
        check: widget_request,
        seeds: &[
            r#"{"action":"auth","api_key":"widget-key"}"#,
            r#"{"action":"auth","token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}"#,
            r#"{"action":"subscribe","feed":"quote:*"}"#,
            r#"{"action":"unsubscribe","feed":"scanners:top_volume"}"#,
            r#"{"action":"get","cache":"news:feed","limit":20}"#,
            r#"{"action":"get","cache":"quote:AAPL"}"#,
            r#"{"action":"ping"}"#,
        ],
        alphabet: b"[]{}\",:.-0123456789eEtruefalsnl actionauthsubscribegetcachefeedlimit*\\u",
    },
    Target {
        name: "manifest",
        check: manifest,
        seeds: &[
            "name = \"leaderboard\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"aggregate\"]\ngolden = \"golden/day-boundary-dst.json\"\nreference_prefetch = [\"ticker-snapshot\", \"avg-volume\", \"free-float\"]\n\n[config]\nboard_size = \"500\"\npublish_every_ms = \"1000\"\n\n[limits]\nmemory_mib = 64\ndeadline_ms = 1000\nbatches_in_flight = 2\n\n[capabilities]\nkey_prefixes = [\"quote:\", \"scanners:\"]\nchannels = [\"quote:\", \"scanners:\"]\n",
            "name = \"news-feed\"\nwit = \"mdp:analyzer@1.0.0\"\nconsumes = [\"news\"]\n\n[config]\nnews_feed_list_max = \"10000\"\n\n[limits]\nmemory_mib = 64\ndeadline_ms = 500\nmax_batch = 100\n",
            "name = \"p\"\nwit = \"mdp:analyzer@1.2\"\nconsumes = [\"quote:*\"]\n",
        ],
        alphabet: b"[]{}\"'=,.\n #\\abcdefghijklmnopqrstuvwxyz_-0123456789@:",
    },
    Target {
        name: "queue_body",
        check: queue_body,
        seeds: &[
            r#"{"event_type":"T","symbol":"MSFT","price":114.125,"size":100,"exchange":4,"id":"12345","tape":3,"conditions":[0,12],"timestamp":1536036818784,"sequence_number":3681328}"#,
            r#"[{"event_type":"Q","symbol":"MSFT","bid_price":114.125,"bid_size":100,"bid_exchange_id":4,"ask_price":114.128,"ask_size":160,"ask_exchange_id":7,"condition":0,"indicators":[604],"timestamp":1536036818784,"sequence_number":50385480,"tape":3}]"#,
            r#"[{"event_type":"A","symbol":"FCX","volume":4989,"accumulated_volume":4332125,"official_open_price":75.98,"vwap":78.0894,"open":78.1,"close":78.08,"high":78.125,"low":78.07,"aggregate_vwap":76.8404,"average_size":62,"start_timestamp":1788877043000,"end_timestamp":1788877044000,"otc":false},{"event_type":"LULD","symbol":"ATHR","high_price":3.63,"low_price":2.97,"indicators":[15],"tape":3,"timestamp":1788877046310003385,"sequence_number":3209681}]"#,
            r#"{"link":"https://www.reuters.com/x","title":"Nvidia shares rise","publishDate":"2026-02-03T14:05:00.000Z","source":"www.reuters.com","language":"en"}"#,
            "[]",
        ],
        alphabet: JSON_ALPHABET,
    },
];

/// A xorshift64* generator: small, deterministic, good enough to mutate inputs.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Target {
    /// The `index`th input of the run seeded with `seed`: one in five is
    /// random bytes of the alphabet, the others a sample; then up to five
    /// mutations (replace, delete, insert, truncate, duplicate a tail,
    /// splice in part of another sample).
    pub fn input(&self, rng: &mut XorShift) -> Vec<u8> {
        let pick = |rng: &mut XorShift| self.alphabet[rng.below(self.alphabet.len())];
        let mut bytes: Vec<u8> = if rng.below(5) == 0 {
            let len = rng.below(200);
            (0..len).map(|_| pick(rng)).collect()
        } else {
            self.seeds[rng.below(self.seeds.len())].as_bytes().to_vec()
        };
        for _ in 0..rng.below(6) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(6) {
                0 => bytes[at] = pick(rng),
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, pick(rng)),
                3 => bytes.truncate(at),
                4 => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend_from_slice(&tail);
                }
                _ => {
                    let other = self.seeds[rng.below(self.seeds.len())].as_bytes();
                    let from = rng.below(other.len());
                    let to = from + rng.below(other.len() - from + 1);
                    bytes.splice(at..at, other[from..to].iter().copied());
                }
            }
        }
        bytes
    }

    /// Check `cases` generated inputs (seeded with `seed`) and every sample
    /// as is; returns how many were accepted and refused. A broken property
    /// panics naming the seed, the case and the input.
    pub fn run(&self, seed: u64, cases: usize) -> (usize, usize) {
        let mut rng = XorShift::new(seed);
        let (mut accepted, mut refused) = (0, 0);
        let samples = self.seeds.iter().map(|s| s.as_bytes().to_vec());
        let generated = (0..cases).map(|_| self.input(&mut rng));
        for (case, input) in samples.chain(generated).enumerate() {
            let result = std::panic::catch_unwind(|| (self.check)(&input));
            match result {
                Ok(Verdict::Accepted) => accepted += 1,
                Ok(Verdict::Refused) => refused += 1,
                Err(panic) => {
                    eprintln!(
                        "fuzz target {} failed: seed {seed:#x}, case {case}, input {:?}",
                        self.name,
                        String::from_utf8_lossy(&input)
                    );
                    std::panic::resume_unwind(panic);
                }
            }
        }
        (accepted, refused)
    }
}
