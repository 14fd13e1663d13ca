//! `news-feed`: the seed's FinlightDataAnalyzer on the
//! `news` queue.
//!
//! Every article is pushed, unchanged, onto the capped list `news:feed:latest`
//! (10000 entries, 2 days) and published on the same channel. Its tickers get
//! the article on `news:ticker:{SYM}` (100 entries, 7 days) as well:
//! - an *enhanced* article (non-empty `companies`) names its tickers through
//!   each company's `primaryListing`, kept only for US listings
//!   (`exchangeCode` XNYS, XASE or XNAS); the ticker is the listing's `ticker`,
//!   else the company's, upper-cased;
//! - a *raw* article is searched (title, a space, summary) for exchange tags
//!   such as `(Nasdaq: ATOS)`, `( NYSE:GM )` or `(amex: xyz)`: 1 to 6
//!   letters, with whitespace (Python's, Unicode spaces included) allowed
//!   inside the parentheses and around the colon.
//!
//! Tickers are upper-cased and de-duplicated in order of first appearance
//! (the seed pushed an enhanced article twice when two companies named the
//! same ticker). A company with a malformed listing, or a ticker that is not
//! 1–16 letters, digits, `.`, `-` or `/`, is skipped and counted
//! (`fda.skipped_tickers`), so it never becomes a key. An empty article
//! (`{}` or `null`) produces nothing, as in the seed; anything that is not a
//! JSON object is rejected with a reason.
//!
//! Config: `news_feed_list_max` (10000), `news_ticker_list_max` (100),
//! `news_feed_cache_ttl` (172800), `news_ticker_cache_ttl` (604800).
//!
//! The Python (`plugins/python/news-feed-py`) and JavaScript
//! (`plugins/js/news-feed-js`) twins implement the same rules and must pass
//! this crate's golden files.

use std::sync::OnceLock;

use mdp_sdk::prelude::*;
use regex_lite::Regex;
use serde_json::Value;

/// The global feed list and channel.
pub const FEED_KEY: &str = "news:feed:latest";
/// US primary-listing exchange codes (NYSE, NYSE American, Nasdaq).
pub const US_EXCHANGES: [&str; 3] = ["XNYS", "XASE", "XNAS"];

/// Python's `\s` in text (ASCII whitespace, the separators U+001C–U+001F,
/// U+0085, the no-break and the other Unicode spaces) as a character class
/// that the Rust, Python and JavaScript engines read alike (each engine's
/// own `\s` is a slightly different set).
pub const PY_WHITESPACE: &str =
    r"[\t\n\x0b\x0c\r\x1c-\x1f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// The exchange tag of a raw article: the seed's
/// `\(\s*(?:nasdaq|nyse|amex)\s*:\s*([A-Z]{1,6})\s*\)` (case-insensitive),
/// spelled out so that the three engines agree exactly: whitespace may
/// stand inside the parentheses and around the colon.
pub fn tag_pattern() -> String {
    let ws = PY_WHITESPACE;
    format!(
        r"\({ws}*(?:[Nn][Aa][Ss][Dd][Aa][Qq]|[Nn][Yy][Ss][Ee]|[Aa][Mm][Ee][Xx]){ws}*:{ws}*([A-Za-z]{{1,6}}){ws}*\)"
    )
}

/// The compiled exchange tag: `(Nasdaq: ATOS)`, `( NYSE:GM )`, `(AMEX: XYZ)`.
fn tag_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(&tag_pattern()).expect("valid regex"))
}

/// True when `s` can be a ticker key: 1–16 ASCII letters, digits, `.`, `-`, `/`.
pub fn valid_ticker(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'/'))
}

/// The tickers an article is filed under, in order, without duplicates, and
/// how many candidate tickers were skipped as malformed.
pub fn tickers(article: &serde_json::Map<String, Value>) -> (Vec<String>, u64) {
    let mut out: Vec<String> = Vec::new();
    let mut skipped = 0;
    let add = |t: String, out: &mut Vec<String>| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    let companies = article
        .get("companies")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    if let Some(companies) = companies {
        for company in companies {
            let listing = company.get("primaryListing").filter(|l| l.is_object());
            let Some(listing) = listing else {
                skipped += 1;
                continue;
            };
            let code = listing.get("exchangeCode").and_then(Value::as_str);
            if !code.is_some_and(|c| US_EXCHANGES.contains(&c)) {
                continue;
            }
            let ticker = [listing.get("ticker"), company.get("ticker")]
                .into_iter()
                .find_map(|v| v.and_then(Value::as_str).filter(|s| !s.is_empty()));
            match ticker.map(str::to_uppercase) {
                Some(t) if valid_ticker(&t) => add(t, &mut out),
                _ => skipped += 1,
            }
        }
    } else {
        let text = |k: &str| article.get(k).and_then(Value::as_str).unwrap_or("");
        let haystack = format!("{} {}", text("title"), text("summary"));
        for cap in tag_regex().captures_iter(&haystack) {
            add(cap[1].to_ascii_uppercase(), &mut out);
        }
    }
    (out, skipped)
}

/// The analyzer.
pub struct NewsFeed {
    feed_max: u32,
    ticker_max: u32,
    feed_ttl: u32,
    ticker_ttl: u32,
}

impl Analyzer for NewsFeed {
    fn describe() -> Info {
        mdp_sdk::info("news-feed", env!("CARGO_PKG_VERSION"), Kinds::OTHER, 0)
    }

    fn init(config: Config, _state: Option<Vec<u8>>) -> Result<Self, AnalyzerError> {
        Ok(NewsFeed {
            feed_max: config.parse_or("news_feed_list_max", 10_000)?,
            ticker_max: config.parse_or("news_ticker_list_max", 100)?,
            feed_ttl: config.parse_or("news_feed_cache_ttl", 172_800)?,
            ticker_ttl: config.parse_or("news_ticker_cache_ttl", 604_800)?,
        })
    }

    fn analyze(&mut self, batch: &[Event]) -> Result<Vec<Effect>, AnalyzerError> {
        let mut effects = Vec::new();
        let (mut articles, mut filed, mut skipped) = (0u64, 0u64, 0u64);
        for (i, event) in batch.iter().enumerate() {
            let Event::Other(raw) = event else {
                effects.push(reject(i, "not a news article"));
                continue;
            };
            let article = match serde_json::from_str::<Value>(&raw.json) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => continue,
                Ok(_) => {
                    effects.push(reject(i, "news article is not a JSON object"));
                    continue;
                }
                Err(_) => {
                    effects.push(reject(i, "news article is not JSON"));
                    continue;
                }
            };
            if article.is_empty() {
                continue;
            }
            articles += 1;
            let body = Body::Input(i as u32);
            effects.push(push(
                FEED_KEY,
                body.clone(),
                self.feed_max,
                Some(self.feed_ttl),
            ));
            effects.push(publish(FEED_KEY, body.clone()));
            let (list, bad) = tickers(&article);
            skipped += bad;
            for t in list {
                filed += 1;
                let key = format!("news:ticker:{t}");
                effects.push(push(
                    key.clone(),
                    body.clone(),
                    self.ticker_max,
                    Some(self.ticker_ttl),
                ));
                effects.push(publish(key, body.clone()));
            }
        }
        host::counter("fda.processed", batch.len() as u64);
        if articles > 0 {
            host::counter("fda.articles", articles);
        }
        if filed > 0 {
            host::counter("fda.ticker_articles", filed);
        }
        if skipped > 0 {
            host::counter("fda.skipped_tickers", skipped);
        }
        Ok(effects)
    }
}

export_analyzer!(NewsFeed);

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_sdk::testing::Harness;
    use mdp_sdk::wire::EffectRecord;
    use serde_json::json;

    fn keys(effects: &[EffectRecord]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                EffectRecord::Push {
                    key,
                    max_len,
                    ttl_secs,
                    ..
                } => format!("push {key} {max_len} {}", ttl_secs.unwrap_or(0)),
                EffectRecord::Publish { channel, .. } => format!("publish {channel}"),
                EffectRecord::Reject { index, reason } => format!("reject {index} {reason}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn run(h: &mut Harness<NewsFeed>, articles: &[Value]) -> Vec<EffectRecord> {
        let msgs: Vec<String> = articles.iter().map(Value::to_string).collect();
        h.analyze_json(&msgs).unwrap()
    }

    fn company(ticker: Option<&str>, listing: Value) -> Value {
        let mut c = json!({"companyId": 1, "name": "Co", "primaryListing": listing});
        if let Some(t) = ticker {
            c["ticker"] = json!(t);
        }
        c
    }

    #[test]
    fn enhanced_articles_go_to_us_listed_tickers_only() {
        let mut h = Harness::<NewsFeed>::new();
        h.init(&[]).unwrap();
        let article = json!({
            "link": "https://x/1", "title": "Deal (NYSE: IGNORED)", "summary": "",
            "companies": [
                company(Some("aapl"), json!({"ticker": "aapl", "exchangeCode": "XNAS"})),
                company(Some("SAP"), json!({"ticker": "SAP", "exchangeCode": "XETR"})),
                company(Some("gm"), json!({"exchangeCode": "XNYS"})),
                company(Some("AAPL"), json!({"ticker": "AAPL", "exchangeCode": "XNAS"})),
                company(Some("X"), json!("not an object")),
                company(None, json!({"exchangeCode": "XASE"})),
                company(Some("BRK.B"), json!({"ticker": "brk.b", "exchangeCode": "XNYS"})),
            ]
        });
        let got = run(&mut h, &[article]);
        assert_eq!(
            keys(&got),
            vec![
                "push news:feed:latest 10000 172800",
                "publish news:feed:latest",
                "push news:ticker:AAPL 100 604800",
                "publish news:ticker:AAPL",
                "push news:ticker:GM 100 604800",
                "publish news:ticker:GM",
                "push news:ticker:BRK.B 100 604800",
                "publish news:ticker:BRK.B",
            ]
        );
        // The article is stored unchanged.
        let stored = h.host(|h| h.store.lrange("news:ticker:GM", 0, -1));
        assert_eq!(stored.len(), 1);
        assert_eq!(
            serde_json::from_str::<Value>(&stored[0]).unwrap()["link"],
            "https://x/1"
        );
        assert_eq!(h.host(|h| h.counters["fda.skipped_tickers"]), 2);
    }

    #[test]
    fn raw_articles_use_exchange_tags_case_insensitively_without_duplicates() {
        let mut h = Harness::<NewsFeed>::new();
        h.init(&[]).unwrap();
        let article = json!({
            "title": "Atos (Nasdaq: ATOS) and GM (NYSE:GM) team up",
            "summary": "Again (nasdaq:atos); (amex: xyz); not (NYSE: TOOLONGX); (LSE: VOD)",
        });
        let got = run(
            &mut h,
            &[article, json!({"title": "no tags", "companies": []})],
        );
        let got = keys(&got);
        assert_eq!(
            got,
            vec![
                "push news:feed:latest 10000 172800",
                "publish news:feed:latest",
                "push news:ticker:ATOS 100 604800",
                "publish news:ticker:ATOS",
                "push news:ticker:GM 100 604800",
                "publish news:ticker:GM",
                "push news:ticker:XYZ 100 604800",
                "publish news:ticker:XYZ",
                "push news:feed:latest 10000 172800",
                "publish news:feed:latest",
            ]
        );
    }

    /// The seed's tag allows whitespace inside the parentheses
    /// and around the colon, and its `\s` takes Unicode spaces.
    #[test]
    fn raw_tags_allow_whitespace_inside_parentheses_and_unicode_spaces() {
        let mut h = Harness::<NewsFeed>::new();
        h.init(&[]).unwrap();
        let article = json!({
            "title": "GM ( NYSE: GM ) and Atos ( Nasdaq:ATOS)",
            "summary": "Ford (NYSE:\u{a0}F), Hood (Nasdaq\u{2009}:\u{3000}HOOD\u{202f}), (amex :\u{85}xyz )",
        });
        let tickers: Vec<String> = keys(&run(&mut h, &[article]))
            .into_iter()
            .filter_map(|k| k.strip_prefix("publish news:ticker:").map(String::from))
            .collect();
        assert_eq!(tickers, vec!["GM", "ATOS", "F", "HOOD", "XYZ"]);
    }

    /// Whitespace is exactly Python's `\s` in text (not Rust's, nor
    /// JavaScript's): every character is tried around a tag.
    #[test]
    fn whitespace_is_pythons() {
        // [c for c in range(0x110000) if re.match(r"\s", chr(c))] in Python 3.
        let python: Vec<u32> = [0x9..=0xd, 0x1c..=0x20, 0x85..=0x85, 0xa0..=0xa0]
            .into_iter()
            .chain([0x1680..=0x1680, 0x2000..=0x200a, 0x2028..=0x2029])
            .chain([0x202f..=0x202f, 0x205f..=0x205f, 0x3000..=0x3000])
            .flatten()
            .collect();
        let spaced: Vec<u32> = (0..=0x10ffff_u32)
            .filter_map(char::from_u32)
            .filter(|c| tag_regex().is_match(&format!("({c}NYSE{c}:{c}GM{c})")))
            .map(u32::from)
            .collect();
        assert_eq!(spaced, python);
    }

    #[test]
    fn caps_and_ttls_come_from_config_and_lists_are_capped() {
        let mut h = Harness::<NewsFeed>::new();
        h.init(&[("news_feed_list_max", "2"), ("news_ticker_cache_ttl", "60")])
            .unwrap();
        for n in 0..3 {
            run(
                &mut h,
                &[json!({"link": n, "title": "(NYSE: GM)", "summary": null})],
            );
        }
        let feed = h.host(|h| h.store.lrange(FEED_KEY, 0, -1));
        assert_eq!(feed.len(), 2, "capped at news_feed_list_max");
        assert!(feed[0].contains("\"link\":2"), "newest first: {feed:?}");
        assert_eq!(h.host(|h| h.store.lrange("news:ticker:GM", 0, -1)).len(), 3);
        assert_eq!(
            h.host(|h| h.store.expiry_ms("news:ticker:GM")),
            Some(60_000)
        );
        assert!(matches!(
            Harness::<NewsFeed>::new().init(&[("news_ticker_list_max", "many")]),
            Err(AnalyzerError::BadConfig(_))
        ));
    }

    #[test]
    fn bad_input_is_skipped_or_rejected_never_trapped() {
        let mut h = Harness::<NewsFeed>::new();
        h.init(&[]).unwrap();
        let batch = vec![
            Event::Other(Raw {
                kind: "news".into(),
                json: "not json".into(),
            }),
            Event::Other(Raw {
                kind: "news".into(),
                json: "[1,2]".into(),
            }),
            Event::Other(Raw {
                kind: "news".into(),
                json: "{}".into(),
            }),
            Event::Other(Raw {
                kind: "news".into(),
                json: "null".into(),
            }),
            Event::Other(Raw {
                kind: "news".into(),
                json: r#"{"title":7,"summary":{"a":1},"companies":"none"}"#.into(),
            }),
            Event::Other(Raw {
                kind: "news".into(),
                json: r#"{"companies":[1,null,{"primaryListing":{"exchangeCode":7,"ticker":"X"}},{"primaryListing":{"exchangeCode":"XNAS","ticker":"A B"}}]}"#.into(),
            }),
        ];
        let effects = h.analyze(batch).unwrap();
        let rejects: Vec<u32> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reject(r) => Some(r.index),
                _ => None,
            })
            .collect();
        assert_eq!(rejects, vec![0, 1]);
        // Articles 4 and 5 reach the feed only.
        let pushes: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Push(p) => Some(p.key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(pushes, vec![FEED_KEY, FEED_KEY]);
        assert!(valid_ticker("BRK.B") && !valid_ticker("") && !valid_ticker("A B"));
    }
}

#[cfg(test)]
mod golden {
    /// Runs a golden file; with `MDP_GOLDEN_BLESS=1` records its effects first.
    fn check(name: &str) {
        mdp_sdk::testing::check_golden_file::<super::NewsFeed>(format!(
            "{}/golden/{name}",
            env!("CARGO_MANIFEST_DIR")
        ));
    }

    #[test]
    fn articles_golden_file() {
        check("articles.json");
    }
}
