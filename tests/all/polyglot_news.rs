//! The news-feed analyzer in Rust, Python (componentize-py) and JavaScript
//! (componentize-js): all three pass the Rust crate's golden file through
//! the real runtime, and produce identical effects and counters on input the
//! golden format cannot carry (non-JSON, non-object, typed events).

use crate::support;

use std::sync::Arc;

use mdp::plugin::{
    FixedClock, HostServices, LoadOptions, Plugin, Runtime, RuntimeConfig, StoreReference, Worker,
    convert, effects, golden,
};
use mdp::store::{EmbeddedStore, Store};
use mdp_sdk::wire::EffectRecord;

use super::polyglot::limits;

const TWINS: [&str; 3] = ["news-feed", "news-feed-py", "news-feed-js"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_twins_pass_the_rust_news_feed_golden_file() {
    let text = std::fs::read_to_string(
        support::repo_root().join("plugins/news-feed/golden/articles.json"),
    )
    .unwrap();
    let golden_file = mdp_sdk::wire::Golden::parse(&text).unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    for name in TWINS {
        let bytes = std::fs::read(support::plugin_wasm(name)).unwrap();
        golden::run(&runtime, bytes, &golden_file, limits())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Effects and counters of one twin on `messages` (pub/sub-style raw events
/// plus one typed trade), with `config`.
async fn run_twin(
    runtime: &Runtime,
    name: &str,
    config: &[(&str, &str)],
    messages: &[&str],
) -> (Vec<EffectRecord>, std::collections::BTreeMap<String, u64>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store)),
        clock: Arc::new(FixedClock::new(1_773_061_500_000_000)),
    };
    let options = LoadOptions {
        limits: limits(),
        ..LoadOptions::default()
    };
    let bytes = std::fs::read(support::plugin_wasm(name)).unwrap();
    let plugin = Plugin::load(runtime, bytes, options, &services)
        .await
        .unwrap();
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut worker = Worker::new(plugin, services, config);
    worker.start().await.unwrap();
    let mut texts: Vec<String> = messages.iter().map(|m| m.to_string()).collect();
    let mut events: Vec<_> = messages
        .iter()
        .map(|m| convert::pubsub("news", m))
        .collect();
    let trade = r#"{"event_type":"T","symbol":"MSFT","exchange":4,"id":"1","tape":3,"price":1.5,"size":100,"conditions":[],"timestamp":1,"sequence_number":1}"#;
    events.push(convert::decode(trade).unwrap());
    texts.push(trade.to_string());
    let out = worker.analyze(&events).await.unwrap();
    let records = out
        .effects
        .iter()
        .map(|e| effects::record(e, &texts))
        .collect();
    (records, worker.counters())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_agree_on_bad_input_config_and_counters() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let messages = [
        "not json",
        "NaN",
        "[1,2]",
        "\"text\"",
        "null",
        "{}",
        r#"{"title":"(NYSE: gm) and (Nasdaq:\tAAPL) and (AMEX : X)","summary":7}"#,
        r#"{"title":"t","companies":[1,null,{"primaryListing":[]},{"primaryListing":{"exchangeCode":"XNAS","ticker":"ok"}},{"primaryListing":{"exchangeCode":"XNAS","ticker":"way-too-long-ticker"}},{"ticker":"ß","primaryListing":{"exchangeCode":"XNYS"}}]}"#,
        r#"{"title":"unicode (NYSE: ÅB) (nyse: ab)","summary":"(NASDAQ:ABCDEFG)"}"#,
    ];
    let config = [("news_feed_list_max", "5"), ("news_ticker_cache_ttl", "60")];
    let (rust, rust_counters) = run_twin(&runtime, "news-feed", &config, &messages).await;
    // The Rust output itself is what the rules say.
    let summary: Vec<String> = rust
        .iter()
        .map(|e| match e {
            EffectRecord::Push {
                key,
                max_len,
                ttl_secs,
                ..
            } => format!("push {key} {max_len} {ttl_secs:?}"),
            EffectRecord::Publish { channel, .. } => format!("publish {channel}"),
            EffectRecord::Reject { index, reason } => format!("reject {index}: {reason}"),
            other => format!("{other:?}"),
        })
        .collect();
    let expected = [
        "reject 0: news article is not JSON",
        "reject 1: news article is not JSON",
        "reject 2: news article is not a JSON object",
        "reject 3: news article is not a JSON object",
        "push news:feed:latest 5 Some(172800)",
        "publish news:feed:latest",
        "push news:ticker:GM 100 Some(60)",
        "publish news:ticker:GM",
        "push news:ticker:AAPL 100 Some(60)",
        "publish news:ticker:AAPL",
        "push news:ticker:X 100 Some(60)",
        "publish news:ticker:X",
        "push news:feed:latest 5 Some(172800)",
        "publish news:feed:latest",
        "push news:ticker:OK 100 Some(60)",
        "publish news:ticker:OK",
        "push news:ticker:SS 100 Some(60)",
        "publish news:ticker:SS",
        "push news:feed:latest 5 Some(172800)",
        "publish news:feed:latest",
        "push news:ticker:AB 100 Some(60)",
        "publish news:ticker:AB",
        "reject 9: not a news article",
    ];
    assert_eq!(summary, expected);
    assert_eq!(rust_counters.get("fda.skipped_tickers"), Some(&4));
    for name in &TWINS[1..] {
        let (got, counters) = run_twin(&runtime, name, &config, &messages).await;
        assert_eq!(got, rust, "{name} effects differ from Rust's");
        assert_eq!(
            counters, rust_counters,
            "{name} counters differ from Rust's"
        );
    }
}
