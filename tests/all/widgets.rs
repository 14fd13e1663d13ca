//! The widget WebSocket protocol (seed WDS) against an
//! in-process server: every action and error path, both auth modes, pattern
//! subscriptions, limits, a slow client, and a store restart.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mdp::store::{EmbeddedStore, Store, Write};
use mdp::widgets::{ServeConfig, WidgetConfig, serve};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn server(
    store: Arc<dyn Store>,
    args: ServeConfig,
) -> (String, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = serve(store, args, rx).await.expect("serve");
    (format!("ws://{}/ws", handle.addr), tx)
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => {
                return json!({"closed": c.map(|c| u16::from(c.code)).unwrap_or(0)});
            }
            Some(Ok(_)) => continue,
            other => return json!({"closed": format!("{other:?}")}),
        }
    }
}

fn publish(channel: &str, message: &str) -> Write {
    Write::Publish {
        channel: channel.into(),
        message: message.into(),
    }
}

mod auth;
mod protocol;
mod serving;
