//! TLS to the brokers: a TLS-terminating proxy (tokio-rustls, with a
//! throwaway CA made here) in front of the test RabbitMQ and Redis.
//! `amqps://` and `rediss://` work through it with the CA file; plaintext to
//! the TLS port, and TLS to a plaintext port, fail with an error (never a
//! silent plaintext connection).

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use mdp::queue::QueueSpec;
use mdp::store::{Topic, Write};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway CA and a server certificate it signed for `127.0.0.1` and
/// `localhost`; the CA file is set as the process's (`mdp::tls`).
struct TestCa {
    _dir: tempfile::TempDir,
    acceptor: TlsAcceptor,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mdp test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file: PathBuf = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write CA file");
        mdp::tls::set_ca_file(Some(ca_file));

        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server TLS config");
        TestCa {
            _dir: dir,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    })
}

/// The host and port of a broker URL.
fn address(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).expect("broker URL");
    let host = url.host_str().expect("host");
    let port = url.port().expect("port");
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("127.0.0.1:{port}").parse())
        .expect("socket address")
}

/// `url` with another scheme and port (the host kept: 127.0.0.1).
fn rewrite(url: &str, scheme: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).expect("broker URL");
    url.set_scheme(scheme).expect("scheme");
    url.set_port(Some(port)).expect("port");
    url.to_string()
}

/// A TLS-terminating proxy on a free loopback port forwarding to `upstream`;
/// returns the port. Connections that fail the handshake are dropped.
async fn tls_proxy(upstream: SocketAddr) -> u16 {
    let acceptor = test_ca().acceptor.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn amqps_through_a_tls_proxy_publishes_and_consumes() {
    let plain = support::amqp_url();
    let port = tls_proxy(address(&plain)).await;
    let queue = mdp::queue::open(&rewrite(&plain, "amqps", port))
        .await
        .expect("amqps:// through the TLS proxy");
    let name = support::unique("tls");
    queue
        .declare(&QueueSpec {
            name: name.clone(),
            ..QueueSpec::default()
        })
        .await
        .expect("declare");
    queue
        .publish(&name, &[bytes::Bytes::from_static(b"{\"over\":\"tls\"}")])
        .await
        .expect("publish");
    let mut consumer = queue.consume(&name, 1).await.expect("consume");
    let delivery = consumer
        .next()
        .await
        .expect("a delivery")
        .expect("no error");
    assert_eq!(&delivery.body[..], b"{\"over\":\"tls\"}");
    consumer
        .acker()
        .ack(delivery.tag, false)
        .await
        .expect("ack");
}

#[tokio::test]
async fn rediss_through_a_tls_proxy_sets_gets_and_subscribes() {
    let plain = support::redis_url();
    let port = tls_proxy(address(&plain)).await;
    let store = mdp::store::open(&rewrite(&plain, "rediss", port))
        .await
        .expect("rediss:// through the TLS proxy");
    let key = support::unique("tls");
    let mut sub = store
        .subscribe(&[Topic::Channel(key.clone())])
        .await
        .expect("subscribe");
    store
        .apply(
            &[
                Write::Set {
                    key: key.clone(),
                    value: "\"secret\"".into(),
                    ttl: Some(std::time::Duration::from_secs(60)),
                },
                Write::Publish {
                    channel: key.clone(),
                    message: "\"hello\"".into(),
                },
            ],
            false,
        )
        .await
        .expect("set and publish");
    assert_eq!(
        store.get(&key).await.expect("get").as_deref(),
        Some("\"secret\"")
    );
    let message = sub.messages.recv().await.expect("the published message");
    assert_eq!(&*message.payload, "\"hello\"");
}

#[tokio::test]
async fn plaintext_to_the_tls_port_fails() {
    let amqp = support::amqp_url();
    let port = tls_proxy(address(&amqp)).await;
    let Err(e) = mdp::queue::open(&rewrite(&amqp, "amqp", port)).await else {
        panic!("amqp:// to a TLS port connected")
    };
    assert!(e.to_string().contains("is it a TLS port"), "{e}");

    let redis = support::redis_url();
    let port = tls_proxy(address(&redis)).await;
    let Err(e) = mdp::store::open(&rewrite(&redis, "redis", port)).await else {
        panic!("redis:// to a TLS port connected")
    };
    assert!(e.to_string().contains("is it a TLS port"), "{e}");
}

/// The downgrade lapin made without a TLS backend: `amqps://` connected in
/// plaintext. (`rediss://` to a plaintext Redis fails too, by the connection
/// timeout: the server waits for a line the TLS hello never ends.)
#[tokio::test]
async fn amqps_to_a_plaintext_port_fails_instead_of_downgrading() {
    test_ca();
    let amqp = support::amqp_url();
    let Err(e) = mdp::queue::open(&rewrite(&amqp, "amqps", address(&amqp).port())).await else {
        panic!("amqps:// to RabbitMQ's plaintext port connected (in plaintext)")
    };
    assert!(e.to_string().contains("over TLS"), "{e}");
}
