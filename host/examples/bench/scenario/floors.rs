//! The floors the queue scenarios are compared with: the least any client
//! must do against the same RabbitMQ, written with `lapin` directly (no
//! runtime of ours, no decoding, no store).

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

/// Publishes outstanding before the floor waits for their confirms, as the
/// host's listener does with one publish window.
const CONFIRM_WINDOW: usize = 1000;

/// A connection and a fresh (purged, non-durable) queue for a floor.
pub struct RawQueue {
    conn: lapin::Connection,
    name: String,
}

impl RawQueue {
    /// Connect and declare `name` afresh.
    pub async fn new(url: &str, name: &str) -> anyhow::Result<RawQueue> {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let _ = ch
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await;
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(RawQueue {
            conn,
            name: name.to_string(),
        })
    }

    /// Publish `bodies` with confirms, `CONFIRM_WINDOW` outstanding; messages/s.
    pub async fn publish_confirmed(&self, bodies: &[Bytes]) -> anyhow::Result<f64> {
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let started = Instant::now();
        for chunk in bodies.chunks(CONFIRM_WINDOW) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for body in chunk {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        self.name.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        lapin::BasicProperties::default(),
                    )
                    .await?,
                );
            }
            for c in confirms {
                c.await?;
            }
        }
        Ok(bodies.len() as f64 / started.elapsed().as_secs_f64())
    }

    /// Consume `n` messages with `prefetch`, acking every 100th (multiple); messages/s.
    pub async fn consume_acked(&self, n: usize, prefetch: u16) -> anyhow::Result<f64> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                self.name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let started = Instant::now();
        for got in 1..=n {
            let delivery = consumer
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("the floor's consumer ended after {got}"))??;
            if got % 100 == 0 || got == n {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }
}
