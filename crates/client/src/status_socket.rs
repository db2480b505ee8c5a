//! The device's status socket (c2c-api.md §3): kept open beside the uploads, as cameras do,
//! so a pause or resume made on the server is known at once (an [`Event::Paused`] /
//! [`Event::Resumed`]) rather than from the next create's 409, and so the device shows
//! online while it is connected. Best effort by design: it runs as a task of its own,
//! reconnects with a growing pause, and nothing that happens to it touches the uploads.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::events::{Event, WeakEvents};
use crate::session::Session;
use crate::{CLIENT_VERSION, Error, ServerOptions};

/// Phoenix's own heartbeat period; the server closes a socket silent for 60 s.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// No frame from the server for this long (two heartbeats unanswered): reconnect.
const SERVER_SILENT: Duration = Duration::from_secs(75);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// The open (or reconnecting) status socket; dropping it closes it.
pub struct StatusSocket(JoinHandle<()>);

impl Drop for StatusSocket {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

pub(crate) fn spawn(
    session: Arc<Session>,
    events: WeakEvents,
    server: ServerOptions,
) -> StatusSocket {
    StatusSocket(tokio::spawn(async move {
        let mut paused = false;
        let mut pause = Duration::from_secs(1);
        loop {
            match connect(&session, &server).await {
                Ok(ws) => {
                    pause = Duration::from_secs(1);
                    let why = serve(ws, &session.client_id, &events, &mut paused).await;
                    tracing::debug!(why, "status socket closed; reconnecting");
                }
                // Only pairing again helps: the uploads say so themselves.
                Err(e) if e.is_fatal() => {
                    tracing::debug!(error = %e, "status socket given up");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "status socket could not connect"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }))
}

/// Connects with a current token (one refresh and retry after a 401, as every call does).
async fn connect(session: &Session, server: &ServerOptions) -> Result<Ws, Error> {
    let tls = tls_config(server)?;
    session
        .call(|token| {
            let tls = tls.clone();
            async move {
                tokio::time::timeout(CONNECT_TIMEOUT, open(server, tls, &token))
                    .await
                    .map_err(|_| Error::Network("the status socket did not open in time".into()))?
            }
        })
        .await
}

async fn open(
    server: &ServerOptions,
    tls: Arc<rustls::ClientConfig>,
    token: &str,
) -> Result<Ws, Error> {
    let base = reqwest::Url::parse(&server.server).map_err(Error::other)?;
    if base.scheme() != "https" {
        return Err(Error::Other(
            "the status socket needs an https server".into(),
        ));
    }
    let host = base
        .host_str()
        .ok_or_else(|| Error::Other("the server URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = base.port_or_known_default().unwrap_or(443);
    let mut url = base.clone();
    url.set_scheme("wss").map_err(|()| Error::other("wss"))?;
    url.set_path("/devices/websocket");
    url.set_query(None);
    let mut request = url.as_str().into_client_request().map_err(Error::other)?;
    // In a header rather than the query cameras use: proxies log URLs.
    let bearer = format!("Bearer {token}").parse().map_err(Error::other)?;
    request.headers_mut().insert("authorization", bearer);
    if let Ok(version) = CLIENT_VERSION.parse() {
        request
            .headers_mut()
            .insert(rushes_proto::CLIENT_VERSION_HEADER, version);
    }
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Error::Network(e.to_string()))?;
    let name = ServerName::try_from(host).map_err(Error::other)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Network(e.to_string()))?;
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(Error::Http {
            status: res.status().as_u16(),
            detail: "the status socket was refused".into(),
            retry_after: None,
        }),
        Err(e) => Err(Error::Network(e.to_string())),
    }
}

/// The same trust as the HTTP client: the system's roots plus the server's `ca.crt`.
fn tls_config(server: &ServerOptions) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut extra = Vec::new();
    if let Some(ca) = &server.ca {
        for cert in CertificateDer::pem_file_iter(ca).map_err(Error::other)? {
            extra.push(cert.map_err(Error::other)?);
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(Error::other)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Joins the device's topic and heartbeats until the socket ends; returns why it ended.
async fn serve(mut ws: Ws, client_id: &str, events: &WeakEvents, paused: &mut bool) -> String {
    let topic = format!("devices:{client_id}");
    let join = json!({"topic": topic, "event": "phx_join", "payload": {}, "ref": "1"});
    if let Err(e) = ws.send(Message::Text(join.to_string().into())).await {
        return e.to_string();
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.tick().await;
    let mut n: u64 = 1;
    loop {
        tokio::select! {
            frame = tokio::time::timeout(SERVER_SILENT, ws.next()) => {
                let text = match frame {
                    Ok(Some(Ok(Message::Text(text)))) => text,
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return "closed by the server".into(),
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(e))) => return e.to_string(),
                    Err(_) => return "the server went silent".into(),
                };
                let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if msg["event"] != "status_updated" {
                    continue;
                }
                let now_paused = msg["payload"]["status"] == "paused";
                if now_paused != *paused {
                    *paused = now_paused;
                    events.emit(if now_paused { Event::Paused } else { Event::Resumed });
                }
            }
            _ = heartbeat.tick() => {
                n += 1;
                let beat = json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": n.to_string()});
                if let Err(e) = ws.send(Message::Text(beat.to_string().into())).await {
                    return e.to_string();
                }
            }
        }
    }
}
