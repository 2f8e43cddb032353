//! Raw tokio TCP on loopback vs the raintree transport, side by side.
//!
//! `cargo run --release -p raintree --example transport_bench -- [--json] [--secs S]`
//!
//! Figures: (a) one-way `send` throughput on one pooled connection with 1 KiB and 64 KiB
//! payloads, (b) sequential request/response round trips, (c) handshakes (raw: TCP
//! connect/accept), (d) memory per idle connection with 1,000 connections (RSS delta, both
//! ends of every connection counted). The raw baseline frames messages with a u32 length
//! prefix and batches writes the same way (up to 256 KiB per write), without encryption,
//! protobuf, queues or events.
//!
//! A second baseline is an encrypted peer: rustls (TLS 1.3, tokio-rustls, Ed25519 certificates
//! on both sides, no session resumption) with the same framing, payloads and one-connection
//! pattern and its preferred AES-256-GCM suite (the cipher of this transport's Noise suite).
//! The `cipher` case compares Noise suites on one core: sealing and opening alone, and the
//! Noise part of a handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use raintree::proto::wire::{Message, MessageId};
use raintree::proto::Address;
use raintree::transport::handshake::{self, LocalKeys};
use raintree::transport::{
    Event, Events, Identity, SendError, Transport, TransportConfig, TransportMetrics,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

const BATCH: usize = 256 * 1024;
const IDLE_CONNECTIONS: usize = 1000;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

fn raw_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(8 << 20)
        .new_codec()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

// ---------------------------------------------------------------- raw baseline

async fn raw_throughput(size: usize, dur: Duration) -> f64 {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let mut fr = FramedRead::with_capacity(s, raw_codec(), BATCH);
        let mut n = 0u64;
        while let Some(Ok(_)) = fr.next().await {
            n += 1;
        }
        n
    });
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let _ = c.set_nodelay(true);
    let payload = vec![7u8; size];
    let mut buf = BytesMut::with_capacity(BATCH + size + 4);
    let start = Instant::now();
    while start.elapsed() < dur {
        for _ in 0..64 {
            buf.put_u32(size as u32);
            buf.extend_from_slice(&payload);
            if buf.len() >= BATCH {
                c.write_all(&buf).await.expect("write");
                buf.clear();
            }
        }
    }
    c.write_all(&buf).await.expect("write");
    c.shutdown().await.expect("shutdown");
    let n = server.await.expect("server");
    n as f64 / start.elapsed().as_secs_f64()
}

async fn raw_round_trips(dur: Duration) -> f64 {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let (r, mut w) = s.into_split();
        let mut fr = FramedRead::new(r, raw_codec());
        while let Some(Ok(f)) = fr.next().await {
            let mut out = BytesMut::with_capacity(4 + f.len());
            out.put_u32(f.len() as u32);
            out.extend_from_slice(&f);
            if w.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    let c = TcpStream::connect(addr).await.expect("connect");
    let _ = c.set_nodelay(true);
    let (r, mut w) = c.into_split();
    let mut fr = FramedRead::new(r, raw_codec());
    let mut req = BytesMut::new();
    req.put_u32(32);
    req.extend_from_slice(&[1u8; 32]);
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        w.write_all(&req).await.expect("write");
        fr.next().await.expect("response").expect("frame");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn raw_connects(dur: Duration) -> f64 {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        let s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.set_nodelay(true);
        drop(s);
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.abort();
    rate
}

async fn raw_idle_memory() -> f64 {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = Arc::clone(&accepted);
    let server = tokio::spawn(async move {
        let mut tasks = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::Relaxed);
            tasks.push(tokio::spawn(async move {
                // A typical raw handler: a read buffer and a read loop.
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }));
        }
        tasks
    });
    let before = rss_bytes();
    let mut clients = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        clients.push(TcpStream::connect(addr).await.expect("connect"));
    }
    while accepted.load(Ordering::Relaxed) < IDLE_CONNECTIONS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let per = (rss_bytes().saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    drop(clients);
    server.abort();
    per
}

// ---------------------------------------------------------------- transport

struct Pair {
    a: Transport,
    b: Transport,
    b_events: Events,
}

async fn pair() -> Pair {
    let (ia, ib) = (Identity::generate(), Identity::generate());
    let mut ca = TransportConfig::new(loopback());
    let mut cb = TransportConfig::new(loopback());
    ca.event_capacity = 16 * 1024;
    cb.event_capacity = 16 * 1024;
    let (a, _a_events) = Transport::bind(ia, ca, TransportMetrics::new())
        .await
        .expect("bind");
    let (b, b_events) = Transport::bind(ib, cb, TransportMetrics::new())
        .await
        .expect("bind");
    let book: HashMap<Address, SocketAddr> =
        [(a.address(), a.local_addr()), (b.address(), b.local_addr())].into();
    a.set_peers(book.clone());
    b.set_peers(book);
    // a's events are not needed; nothing is sent to a except responses.
    Pair { a, b, b_events }
}

fn direct(origin: Address, nonce: u64, payload: Bytes) -> Message {
    Message::Direct {
        id: MessageId { origin, nonce },
        payload,
    }
}

/// Queues the message `make` builds, waiting briefly whenever the peer's queue is full (and
/// building it again: `send` takes the message).
async fn send_paced(t: &Transport, to: Address, make: impl Fn() -> Message) {
    loop {
        match t.send(to, make()) {
            Ok(()) => return,
            Err(SendError::QueueFull { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

async fn transport_throughput(size: usize, dur: Duration) -> f64 {
    let Pair { a, b, mut b_events } = pair().await;
    let to = b.address();
    // The receiver counts payload messages until the marker (nonce u64::MAX).
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(ev) = b_events.recv().await {
            if let Event::Message {
                message: Message::Direct { id, .. },
                ..
            } = ev
            {
                if id.nonce == u64::MAX {
                    break;
                }
                n += 1;
            }
        }
        n
    });
    // Connect first so the figure excludes the handshake.
    a.request(to, Bytes::new(), Duration::from_millis(1))
        .await
        .ok();
    let payload = Bytes::from(vec![7u8; size]);
    let origin = a.address();
    let start = Instant::now();
    let mut nonce = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            send_paced(&a, to, || direct(origin, nonce, payload.clone())).await;
            nonce += 1;
        }
    }
    send_paced(&a, to, || direct(origin, u64::MAX, Bytes::new())).await;
    let n = counter.await.expect("counter");
    let rate = n as f64 / start.elapsed().as_secs_f64();
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    rate
}

async fn transport_round_trips(dur: Duration) -> f64 {
    let Pair { a, b, mut b_events } = pair().await;
    let to = b.address();
    tokio::spawn(async move {
        while let Some(ev) = b_events.recv().await {
            if let Event::Request {
                payload, responder, ..
            } = ev
            {
                responder.respond(payload);
            }
        }
    });
    let body = Bytes::from(vec![1u8; 32]);
    a.request(to, body.clone(), Duration::from_secs(5))
        .await
        .expect("warm-up request");
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        a.request(to, body.clone(), Duration::from_secs(5))
            .await
            .expect("request");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    rate
}

/// A transport that accepts anyone and whose events are drained in the background.
async fn hub(max_inbound: usize) -> (Transport, TransportMetrics) {
    let mut cfg = TransportConfig::new(loopback());
    cfg.open = true;
    cfg.max_inbound = max_inbound;
    // Every client dials from 127.0.0.1: the per-IP handshake limit would measure itself.
    cfg.handshake_limit.rate = 0.0;
    let metrics = TransportMetrics::new();
    let (t, mut events) = Transport::bind(Identity::generate(), cfg, metrics.clone())
        .await
        .expect("bind");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (t, metrics)
}

async fn transport_handshakes(dur: Duration) -> f64 {
    let (server, _) = hub(125).await;
    let keys = LocalKeys::generate(&Identity::generate()).expect("keys");
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        let s = TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        let _ = s.set_nodelay(true);
        let (r, mut w) = s.into_split();
        let mut reader = handshake::noise_reader(r);
        handshake::initiate(&keys, &mut reader, &mut w, server.address())
            .await
            .expect("handshake");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.shutdown(Duration::from_secs(5)).await;
    rate
}

async fn transport_idle_memory() -> f64 {
    let (server, metrics) = hub(IDLE_CONNECTIONS + 10).await;
    let keys = LocalKeys::generate(&Identity::generate()).expect("keys");
    let before = rss_bytes();
    let mut clients = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        // Distinct identities would be pooled separately; one identity per connection is
        // what a real network of 1,000 peers looks like, so generate one each.
        let keys_i = LocalKeys::generate(&Identity::generate()).expect("keys");
        let s = TcpStream::connect(server.local_addr())
            .await
            .expect("connect");
        let (r, mut w) = s.into_split();
        let mut reader = handshake::noise_reader(r);
        handshake::initiate(&keys_i, &mut reader, &mut w, server.address())
            .await
            .expect("handshake");
        clients.push((reader, w));
    }
    drop(keys);
    while metrics.open_connections("inbound") < IDLE_CONNECTIONS as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let per = (rss_bytes().saturating_sub(before)) as f64 / IDLE_CONNECTIONS as f64;
    drop(clients);
    server.shutdown(Duration::from_secs(5)).await;
    per
}

/// A finished XX handshake between two fresh key pairs: (initiator, responder) states.
fn noise_session(
    noise_params: &str,
    payload: &[u8],
) -> (snow::StatelessTransportState, snow::StatelessTransportState) {
    let params = || noise_params.parse().expect("params");
    let kp = || snow::Builder::new(params()).generate_keypair().expect("kp");
    let (ki, kr) = (kp(), kp());
    let mut i = snow::Builder::new(params())
        .local_private_key(&ki.private)
        .expect("key")
        .build_initiator()
        .expect("init");
    let mut r = snow::Builder::new(params())
        .local_private_key(&kr.private)
        .expect("key")
        .build_responder()
        .expect("resp");
    let mut buf = [0u8; 1024];
    let mut out = [0u8; 1024];
    for step in 0..3 {
        let (w, rd, p) = match step {
            0 => (&mut i, &mut r, &[][..]),
            1 => (&mut r, &mut i, payload),
            _ => (&mut i, &mut r, payload),
        };
        let n = w.write_message(p, &mut buf).expect("hs write");
        rd.read_message(&buf[..n], &mut out).expect("hs read");
    }
    (
        i.into_stateless_transport_mode().expect("transport"),
        r.into_stateless_transport_mode().expect("transport"),
    )
}

/// Single-core cost of the session cipher alone: bytes/s of seal followed by open of full
/// Noise messages. Each direction of a connection needs one seal and one open per byte, so
/// this bounds the encrypted throughput on a machine whose cores also run TCP.
fn cipher_ceiling(noise_params: &str, dur: Duration) -> f64 {
    let (i, r) = noise_session(noise_params, &[]);
    let mut buf = vec![0u8; 65535];
    let mut out = vec![0u8; 65535];
    let plain = vec![7u8; raintree::transport::framing::MAX_NOISE_PLAINTEXT];
    let start = Instant::now();
    let mut nonce = 0u64;
    while start.elapsed() < dur {
        let n = i.write_message(nonce, &plain, &mut buf).expect("seal");
        r.read_message(nonce, &buf[..n], &mut out).expect("open");
        nonce += 1;
    }
    (nonce as f64 * plain.len() as f64) / start.elapsed().as_secs_f64()
}

/// Single-core cost of the Noise part of a handshake (key generation, DH, hashing, both
/// ends, 100-byte payloads as the identity payloads are; no Ed25519 and no sockets):
/// handshakes per second.
fn handshake_cpu(noise_params: &str, dur: Duration) -> f64 {
    let payload = [5u8; 100];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        std::hint::black_box(noise_session(noise_params, &payload));
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The Noise suites compared by the `cipher` case (the first is the one before AESGCM).
const SUITES: [&str; 4] = [
    "Noise_XX_25519_ChaChaPoly_BLAKE2s",
    "Noise_XX_25519_ChaChaPoly_SHA256",
    "Noise_XX_25519_AESGCM_BLAKE2s",
    "Noise_XX_25519_AESGCM_SHA256",
];

// ---------------------------------------------------------------- rustls baseline

struct TlsPair {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn ed25519_cert(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    (cert.der().clone(), PrivateKeyDer::Pkcs8(der))
}

/// Server and client configs that authenticate each other with self-signed Ed25519
/// certificates, as Noise XX with signed static keys authenticates both ends.
fn tls_pair() -> TlsPair {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    let provider = Arc::new(provider);
    let (server_cert, server_key) = ed25519_cert("server");
    let (client_cert, client_key) = ed25519_cert("client");
    let mut server_roots = rustls::RootCertStore::empty();
    server_roots.add(client_cert.clone()).expect("client root");
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(server_cert.clone()).expect("server root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(server_roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server_key)
        .expect("server config");
    // Every connection pays a full handshake, as every Noise connection does.
    server.send_tls13_tickets = 0;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(client_roots)
        .with_client_auth_cert(vec![client_cert], client_key)
        .expect("client config");
    client.resumption = rustls::client::Resumption::disabled();
    TlsPair {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("server").expect("name")
}

async fn tls_connect(
    pair: &TlsPair,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(pair.client.clone())
        .connect(server_name(), tcp)
        .await
        .expect("tls handshake")
}

async fn tls_throughput(size: usize, dur: Duration) -> f64 {
    let pair = tls_pair();
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(pair.server.clone());
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let s = acceptor.accept(s).await.expect("tls accept");
        let mut fr = FramedRead::with_capacity(s, raw_codec(), BATCH);
        let mut n = 0u64;
        while let Some(Ok(_)) = fr.next().await {
            n += 1;
        }
        n
    });
    let mut c = tls_connect(&pair, addr).await;
    let payload = vec![7u8; size];
    let mut buf = BytesMut::with_capacity(BATCH + size + 4);
    let start = Instant::now();
    while start.elapsed() < dur {
        for _ in 0..64 {
            buf.put_u32(size as u32);
            buf.extend_from_slice(&payload);
            if buf.len() >= BATCH {
                c.write_all(&buf).await.expect("write");
                buf.clear();
            }
        }
    }
    c.write_all(&buf).await.expect("write");
    c.shutdown().await.expect("shutdown");
    let n = server.await.expect("server");
    n as f64 / start.elapsed().as_secs_f64()
}

async fn tls_round_trips(dur: Duration) -> f64 {
    let pair = tls_pair();
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(pair.server.clone());
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let _ = s.set_nodelay(true);
        let s = acceptor.accept(s).await.expect("tls accept");
        let (r, mut w) = tokio::io::split(s);
        let mut fr = FramedRead::new(r, raw_codec());
        while let Some(Ok(f)) = fr.next().await {
            let mut out = BytesMut::with_capacity(4 + f.len());
            out.put_u32(f.len() as u32);
            out.extend_from_slice(&f);
            if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                break;
            }
        }
    });
    let c = tls_connect(&pair, addr).await;
    let (r, mut w) = tokio::io::split(c);
    let mut fr = FramedRead::new(r, raw_codec());
    let mut req = BytesMut::new();
    req.put_u32(32);
    req.extend_from_slice(&[1u8; 32]);
    let mut n = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        w.write_all(&req).await.expect("write");
        w.flush().await.expect("flush");
        fr.next().await.expect("response").expect("frame");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn tls_handshakes(dur: Duration) -> f64 {
    let pair = tls_pair();
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(pair.server.clone());
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let _ = acceptor.accept(s).await;
            });
        }
    });
    let mut n = 0u64;
    let start = Instant::now();
    // As for the transport: done when the dialler has sent its last handshake message.
    while start.elapsed() < dur {
        drop(tls_connect(&pair, addr).await);
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    server.abort();
    rate
}

// ---------------------------------------------------------------- report

/// `row` plus the rustls baseline; targets are minimum ratios to raw TCP and to rustls.
fn row_tls(
    unit: &str,
    raw: f64,
    tls: f64,
    ours: f64,
    targets: (Option<f64>, Option<f64>),
) -> Value {
    let mut v = row(unit, raw, ours, targets.0.map(|t| ("ratio>=", t)));
    let ratio = if tls > 0.0 { ours / tls } else { 0.0 };
    v["rustls"] = json!(tls.round());
    v["ratio_vs_rustls"] = json!((ratio * 1000.0).round() / 1000.0);
    if let Some(t) = targets.1 {
        v["rustls_target"] = json!(format!("ratio>= {t}"));
        v["meets_rustls_target"] = json!(ratio >= t);
    }
    v
}

fn row(unit: &str, raw: f64, ours: f64, target: Option<(&str, f64)>) -> Value {
    let ratio = if raw > 0.0 { ours / raw } else { 0.0 };
    let mut v = json!({
        "unit": unit,
        "raw": raw.round(),
        "transport": ours.round(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
    });
    if let Some((kind, t)) = target {
        v["target"] = json!(format!("{kind} {t}"));
        v["meets_target"] = json!(match kind {
            "ratio>=" => ratio >= t,
            _ => ours < t,
        });
    }
    v
}

/// Runs one memory measurement in a fresh child process, so neither heap inherits the
/// other's free memory.
fn idle_memory_in_child(which: &str) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let out = std::process::Command::new(exe)
        .args(["--memory-child", which])
        .output()
        .expect("spawn child");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let as_json = args.iter().any(|a| a == "--json");
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let only = arg("--only");
    let dur = Duration::from_secs_f64(secs);
    // 1,000 connections with both ends in this process need a few thousand descriptors.
    let _ = rlimit::increase_nofile_limit(8192);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(which) = arg("--memory-child") {
        let per = rt.block_on(async {
            if which == "raw" {
                raw_idle_memory().await
            } else {
                transport_idle_memory().await
            }
        });
        println!("{per}");
        return;
    }
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut report = serde_json::Map::new();
    report.insert("seconds_per_case".into(), json!(secs));
    rt.block_on(async {
        // Profiling aids: `--only t1k` / `--only t64k` run the transport side alone,
        // `--only l1k` / `--only l64k` the rustls side alone.
        for (name, size) in [("t1k", 1024), ("t64k", 65536)] {
            if only.as_deref() == Some(name) {
                let t = transport_throughput(size, dur).await;
                report.insert(name.into(), row("msgs/s", 0.0, t, None));
            }
        }
        for (name, size) in [("l1k", 1024), ("l64k", 65536)] {
            if only.as_deref() == Some(name) {
                let l = tls_throughput(size, dur).await;
                report.insert(name.into(), row("msgs/s (rustls)", 0.0, l, None));
            }
        }
        if want("1k") {
            let r = raw_throughput(1024, dur).await;
            let l = tls_throughput(1024, dur).await;
            let t = transport_throughput(1024, dur).await;
            report.insert(
                "throughput_1k_msgs_per_s".into(),
                row_tls("msgs/s", r, l, t, (Some(0.4), Some(1.0))),
            );
        }
        if want("64k") {
            let r = raw_throughput(64 * 1024, dur).await * 65536.0;
            let l = tls_throughput(64 * 1024, dur).await * 65536.0;
            let t = transport_throughput(64 * 1024, dur).await * 65536.0;
            report.insert(
                "throughput_64k_bytes_per_s".into(),
                row_tls("payload bytes/s", r, l, t, (Some(0.6), Some(0.9))),
            );
        }
        if want("rtt") {
            let r = raw_round_trips(dur).await;
            let l = tls_round_trips(dur).await;
            let t = transport_round_trips(dur).await;
            report.insert(
                "round_trips_per_s".into(),
                row_tls("round trips/s", r, l, t, (Some(0.7), None)),
            );
        }
        if want("handshake") {
            let r = raw_connects(dur).await;
            let l = tls_handshakes(dur).await;
            let t = transport_handshakes(dur).await;
            let v = row_tls(
                "connections/s (raw: TCP connect only)",
                r,
                l,
                t,
                (None, Some(0.8)),
            );
            report.insert("handshakes_per_s".into(), v);
        }
    });
    if want("cipher") {
        let cd = dur.min(Duration::from_secs(1));
        let (base_c, base_h) = (cipher_ceiling(SUITES[0], cd), handshake_cpu(SUITES[0], cd));
        for suite in SUITES {
            let c = cipher_ceiling(suite, cd);
            let h = handshake_cpu(suite, cd);
            report.insert(
                format!("cipher_{suite}"),
                row(
                    "bytes/s, sealing + opening alone, one core (raw column: ChaChaPoly_BLAKE2s)",
                    base_c,
                    c,
                    None,
                ),
            );
            report.insert(
                format!("handshake_cpu_{suite}"),
                row(
                    "Noise handshakes/s, both ends, one core (raw column: ChaChaPoly_BLAKE2s)",
                    base_h,
                    h,
                    None,
                ),
            );
        }
    }
    if want("memory") {
        let t = idle_memory_in_child("transport");
        let r = idle_memory_in_child("raw");
        report.insert(
            "idle_connection_bytes".into(),
            row(
                "bytes per idle connection (both ends)",
                r,
                t,
                Some(("transport<", 65536.0)),
            ),
        );
    }
    let report = Value::Object(report);
    if as_json {
        println!("{report}");
        return;
    }
    let met = |b: Option<&Value>| match b.and_then(|b| b.as_bool()) {
        Some(true) => "(met)",
        Some(false) => "(MISSED)",
        None => "",
    };
    println!(
        "{:<44} {:>14} {:>14} {:>14} {:>7} {:>9}  target",
        "figure", "raw tcp", "rustls", "transport", "ratio", "vs rustls"
    );
    if let Value::Object(m) = &report {
        for (k, v) in m {
            if let Value::Object(_) = v {
                let or_dash = |x: &Value| {
                    if x.is_null() {
                        "-".to_string()
                    } else {
                        x.to_string()
                    }
                };
                println!(
                    "{:<44} {:>14} {:>14} {:>14} {:>7} {:>9}  {} {}",
                    k,
                    v["raw"],
                    or_dash(&v["rustls"]),
                    v["transport"],
                    v["ratio"],
                    or_dash(&v["ratio_vs_rustls"]),
                    v.get("target").and_then(|t| t.as_str()).unwrap_or("-"),
                    met(v.get("meets_target")),
                );
                if let Some(t) = v.get("rustls_target").and_then(|t| t.as_str()) {
                    println!(
                        "{:<44} vs rustls: {t} {}",
                        "",
                        met(v.get("meets_rustls_target"))
                    );
                }
            }
        }
    }
}
