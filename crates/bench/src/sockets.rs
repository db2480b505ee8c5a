//! Many cameras holding the status socket open (`/devices/websocket`), each sending a
//! Phoenix heartbeat on its own schedule and timing the server's reply: what the socket
//! costs the server in memory, how fast heartbeats are answered while footage arrives,
//! and what the sockets take from an ingest running beside them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::control::Device;
use crate::procs::Server;

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Open sockets and the heartbeat replies they timed; dropping it closes them all.
pub struct Held {
    tasks: Vec<JoinHandle<()>>,
    /// When each heartbeat was sent, and how long its reply took.
    replies: Arc<Mutex<Vec<(Instant, Duration)>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Heartbeat replies sent between two moments: how many, and their 99th percentile (ms).
#[derive(Debug, Clone, Copy)]
pub struct Replies {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Held {
    pub fn replies_between(&self, from: Instant, to: Instant) -> Replies {
        let mut took: Vec<Duration> = self
            .replies
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(at, _)| *at >= from && *at <= to)
                    .map(|(_, d)| *d)
                    .collect()
            })
            .unwrap_or_default();
        took.sort_unstable();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Replies {
            count: took.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: took.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// Opens `count` sockets spread over `devices` (v1 serializer, token in the query), joins
/// each device's topic, then heartbeats every `every`, the sockets' first beats spread
/// evenly over one period as independent cameras' would be.
pub async fn open(
    server: &Server,
    devices: &[Device],
    count: usize,
    every: Duration,
) -> anyhow::Result<Held> {
    if devices.is_empty() {
        bail!("no devices to open sockets for");
    }
    let tls = tls(server)?;
    let addr = server.url.trim_start_matches("https://").to_owned();
    let replies: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let mut tasks = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let device = &devices[i % devices.len()];
        let mut ws = connect(&addr, tls.clone(), &device.tokens.access_token)
            .await
            .with_context(|| format!("socket {i}"))?;
        let topic = format!("devices:{}", device.client_id);
        send(
            &mut ws,
            json!({"topic": topic, "event": "phx_join", "payload": {}, "ref": "join"}),
        )
        .await?;
        reply(&mut ws, "join").await?;
        let first = start + every.mul_f64(i as f64 / count as f64);
        let replies = replies.clone();
        tasks.push(tokio::spawn(async move {
            let _ = heartbeat(ws, first, every, replies).await;
        }));
    }
    Ok(Held { tasks, replies })
}

async fn heartbeat(
    mut ws: Ws,
    first: Instant,
    every: Duration,
    replies: Arc<Mutex<Vec<(Instant, Duration)>>>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval_at(first.into(), every);
    for n in 0u64.. {
        tick.tick().await;
        let r = n.to_string();
        let sent = Instant::now();
        send(
            &mut ws,
            json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": r}),
        )
        .await?;
        reply(&mut ws, &r).await?;
        if let Ok(mut all) = replies.lock() {
            all.push((sent, sent.elapsed()));
        }
    }
    Ok(())
}

async fn send(ws: &mut Ws, msg: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(msg.to_string().into())).await?;
    Ok(())
}

/// Reads until the `phx_reply` to `r` (status pushes in between are skipped).
async fn reply(ws: &mut Ws, r: &str) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let msg: Value = serde_json::from_str(text.as_str())?;
                if msg["event"] == "phx_reply" && msg["ref"] == r {
                    if msg["payload"]["status"] != "ok" {
                        bail!("the server answered {msg}");
                    }
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(_))) | None => bail!("the server closed the socket"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

async fn connect(addr: &str, tls: Arc<rustls::ClientConfig>, token: &str) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let request = format!("wss://{addr}/devices/websocket?Authorization=Bearer%20{token}")
        .into_client_request()?;
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// HTTP/1.1 over TLS trusting only the server's CA.
fn tls(server: &Server) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.ca())? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
