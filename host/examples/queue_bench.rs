//! Benchmark (not a test): RabbitMQ publish (with confirms) and consume+ack
//! rates through `mdp`'s `RabbitQueue`, next to a minimal raw `lapin` loop in
//! the same run; then `mdp process` with the router over the same volume,
//! per-event and frame-batched messages.
//!
//! `cargo run --release -p mdp --example queue_bench -- amqp://guest:guest@127.0.0.1:5672/%2f target/plugins/massive-router.wasm [N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use mdp::plugin::{
    FixedClock, HostServices, LiveWorker, Plugin, PluginSlot, Runtime, RuntimeConfig,
    StoreReference,
};
use mdp::process::{Processor, ProcessorConfig};
use mdp::queue::{Queue, QueueSpec};
use mdp::store::{EmbeddedStore, Store};

fn body(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"event_type":"Q","symbol":"S{}","bid_price":1.5,"ask_price":1.6,"bid_size":1,"ask_size":1,"timestamp":{i},"sequence_number":{i}}}"#,
        i % 500
    ))
}

async fn raw_lapin(url: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "bench-raw".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_purge("bench-raw".into(), QueuePurgeOptions::default())
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut confirms = Vec::new();
        for i in chunk {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    "bench-raw".into(),
                    BasicPublishOptions::default(),
                    &body(*i),
                    lapin::BasicProperties::default(),
                )
                .await?,
            );
        }
        for c in confirms {
            c.await?;
        }
    }
    let publish = n as f64 / started.elapsed().as_secs_f64();
    let consumer_ch = conn.create_channel().await?;
    consumer_ch
        .basic_qos(1000, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            "bench-raw".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.expect("delivery")?;
        got += 1;
        if got % 100 == 0 || got == n {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    Ok((publish, n as f64 / started.elapsed().as_secs_f64()))
}

async fn through_mdp(queue: &Arc<dyn Queue>, n: usize) -> anyhow::Result<(f64, f64)> {
    let name = "bench-mdp";
    queue
        .declare(&QueueSpec {
            name: name.into(),
            ..QueueSpec::default()
        })
        .await?;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let bodies: Vec<Bytes> = chunk.iter().map(|i| body(*i)).collect();
        queue.publish(name, &bodies).await?;
    }
    let publish = n as f64 / started.elapsed().as_secs_f64();
    let mut consumer = queue.consume(name, 1000).await?;
    let acker = consumer.acker();
    let started = Instant::now();
    for got in 1..=n {
        let d = consumer.next().await.expect("delivery")?;
        if got % 100 == 0 || got == n {
            acker.ack(d.tag, true).await?;
        }
    }
    Ok((publish, n as f64 / started.elapsed().as_secs_f64()))
}

async fn processor(
    queue: &Arc<dyn Queue>,
    wasm: &str,
    n: usize,
    frame: usize,
) -> anyhow::Result<f64> {
    let name = format!("bench-proc-{frame}");
    queue
        .declare(&QueueSpec {
            name: name.clone(),
            ..QueueSpec::default()
        })
        .await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let bodies: Vec<Bytes> = if frame == 1 {
            chunk.iter().map(|i| body(*i)).collect()
        } else {
            chunk
                .chunks(frame)
                .map(|c| {
                    Bytes::from(format!(
                        "[{}]",
                        c.iter()
                            .map(|i| String::from_utf8_lossy(&body(*i)).into_owned())
                            .collect::<Vec<_>>()
                            .join(",")
                    ))
                })
                .collect()
        };
        queue.publish(&name, &bodies).await?;
    }
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let services = HostServices {
        store: store.clone(),
        reference: Arc::new(StoreReference::new(store.clone())),
        clock: Arc::new(FixedClock::new(0)),
    };
    let runtime = Runtime::new(RuntimeConfig::default())?;
    // The plugin's own manifest (next to the .wasm): limits such as
    // `batches_in_flight` apply as in production.
    let manifest =
        mdp::plugin::manifest::Manifest::load(&std::path::Path::new(wasm).with_extension("toml"))?;
    let plugin = Plugin::load(
        &runtime,
        std::fs::read(wasm)?,
        manifest.load_options(),
        &services,
    )
    .await?;
    let live = LiveWorker::new(PluginSlot::fixed(plugin, manifest), services)?;
    let config = ProcessorConfig {
        queue: name.clone(),
        prefetch: 2000,
        batch_size: 256,
        ..ProcessorConfig::default()
    };
    let mut p = Processor::new(config, queue.clone(), store.clone(), live);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(async move { p.run(rx).await });
    // One consumer keeps queue order: the last event is processed last.
    let last_key = format!("stocks:quotes:S{}", (n - 1) % 500);
    let last_mark = format!("\"timestamp\":{}", n - 1);
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if store
            .get(&last_key)
            .await?
            .is_some_and(|v| v.contains(&last_mark))
        {
            break;
        }
    }
    let elapsed = started.elapsed();
    tx.send(true)?;
    let stats = task.await??;
    Ok(stats.processed as f64 / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).expect("amqp url");
    let wasm = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "target/plugins/massive-router.wasm".into());
    let n: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let (rp, rc) = raw_lapin(&url, n).await?;
    println!("raw lapin:    publish {rp:>9.0} msg/s (confirms), consume+ack {rc:>9.0} msg/s");
    let queue = mdp::queue::open(&url).await?;
    let (mp, mc) = through_mdp(&queue, n).await?;
    println!("mdp RabbitQueue: publish {mp:>9.0} msg/s (confirms), consume+ack {mc:>9.0} msg/s");
    let per_event = processor(&queue, &wasm, n, 1).await?;
    println!("mdp process (router), per-event messages: {per_event:>9.0} events/s");
    let batched = processor(&queue, &wasm, n, 100).await?;
    println!("mdp process (router), frame-batched (100/msg): {batched:>9.0} events/s");
    Ok(())
}
