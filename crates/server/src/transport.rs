//! What embedded TLS and HTTP stacks need of the connection itself (c2c-api.md §1,
//! "Transport tolerance" and "Answers the client can read"), kept apart from the routes:
//!
//! - [`TlsAcceptor`]: the TLS handshake. rustls aborts a handshake whose ALPN list holds
//!   nothing we serve (a camera offering only `http/1.0`); nginx and OpenSSL servers
//!   instead go on with no protocol selected, and so do we. A ClientHello without SNI gets
//!   the one certificate we have.
//! - [`answer_readably`]: the outermost middleware. It refuses header blocks over 64 KiB
//!   the same way on HTTP/1.1 and HTTP/2, and makes sure that a request answered before
//!   its body was read (refused from its headers alone) does not end in a TCP reset the
//!   client would see instead of the answer: the unread rest of the body is read and
//!   discarded, within bounds, while hyper writes the answer.
//! - [`refuse_oversized`]: a route group's body limit applied to `Content-Length` before
//!   anything reads the body, so the refusal comes before `100 Continue`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ApiError;

/// Request header blocks larger than this (names, values and their `: ` and line ends,
/// summed) are refused with 431, whatever the HTTP version.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How much of a refused request's body is read and thrown away, at most, so that a client
/// still sending it can read the answer instead of meeting a reset: more than any JSON body
/// we take (2 MiB) and than a 20 MB body sent whole, bounded so that a refused request
/// cannot keep a connection (and our CPU, decrypting) busy for long.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The longest time spent draining one refused body.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(30);
/// Draining stops when the client sends nothing for this long (one that waited for
/// `100 Continue`, got the answer instead and never sends its body).
const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// The TLS side of an accepted connection: a rustls handshake that tolerates ALPN lists we
/// cannot match, bounded in time.
#[derive(Clone)]
pub struct TlsAcceptor {
    /// Offers `h2` and `http/1.1` by ALPN.
    with_alpn: Arc<ServerConfig>,
    /// The same without ALPN, for clients whose list holds neither: they get HTTP/1.x (or
    /// whatever they speak: hyper tells HTTP/2 from its preface, not from ALPN).
    without_alpn: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    pub fn new(config: Arc<ServerConfig>, handshake_timeout: Duration) -> TlsAcceptor {
        let mut without_alpn = (*config).clone();
        without_alpn.alpn_protocols.clear();
        TlsAcceptor {
            with_alpn: config,
            without_alpn: Arc::new(without_alpn),
            handshake_timeout,
        }
    }

    /// The configuration for a client offering `offered` by ALPN (`None`: no ALPN
    /// extension at all, which rustls handles by selecting nothing).
    fn config_for<'a>(&self, offered: Option<impl Iterator<Item = &'a [u8]>>) -> Arc<ServerConfig> {
        let Some(mut offered) = offered else {
            return self.with_alpn.clone();
        };
        let ours = &self.with_alpn.alpn_protocols;
        if offered.any(|p| ours.iter().any(|o| o.as_slice() == p)) {
            self.with_alpn.clone()
        } else {
            self.without_alpn.clone()
        }
    }

    /// Reads the ClientHello, picks the configuration, completes the handshake. A failure
    /// ends the connection (axum-server drops it); this is the place to record why.
    async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let config = self.config_for(start.client_hello().alpn());
        start.into_stream(config).await
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<TcpStream, S> for TlsAcceptor {
    type Stream = TlsStream<TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, S)>> + Send>>;

    fn accept(&self, tcp: TcpStream, service: S) -> Self::Future {
        let acceptor = self.clone();
        Box::pin(async move {
            let tls = tokio::time::timeout(acceptor.handshake_timeout, acceptor.handshake(tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            Ok((tls, service))
        })
    }
}

/// The size of a header block as HTTP/1.1 spells it (`name: value\r\n` per field), the
/// measure both versions are held to.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The outermost layer: 431 for oversized header blocks, and a readable answer for any
/// request answered before its body was read (see the module comment).
pub async fn answer_readably(req: Request, next: Next) -> Response {
    let expects_continue = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // HTTP/2 ends a stream whose body we did not want on its own (RST_STREAM after the
    // answer), without touching the connection; HTTP/1.x has only the connection.
    let http1 = req.version() <= Version::HTTP_11;
    let (answered, answered_rx) = oneshot::channel();
    let left_unread = Arc::new(AtomicBool::new(false));
    let too_large = header_bytes(req.headers()) > MAX_HEADER_BYTES;
    let req = if http1 {
        let left_unread = left_unread.clone();
        req.map(|body| Body::new(DrainOnDrop::new(body, answered_rx, left_unread)))
    } else {
        req
    };
    let mut res = if too_large {
        drop(req);
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request Header Fields Too Large",
            format!("The request's headers exceed {MAX_HEADER_BYTES} bytes."),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    if expects_continue && left_unread.load(Ordering::Acquire) {
        // The client may never send the body it announced (it was told the answer instead
        // of `100 Continue`), so nothing else can follow on this connection.
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    // The answer goes to hyper now, in this same poll: the drain may begin.
    let _ = answered.send(());
    res
}

/// A route group's body limit, checked against `Content-Length` before the body is read
/// (a body without one meets the same limit as it is read, through `DefaultBodyLimit`).
pub async fn refuse_oversized(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            format!("The request body is too large (at most {limit} bytes)."),
        )
        .into_response();
    }
    next.run(req).await
}

/// A request body that, dropped before its end, goes on being read in a task of its own
/// (within [`DRAIN_MAX_BYTES`], [`DRAIN_MAX_TIME`] and [`DRAIN_IDLE`]), once the answer has
/// been handed to hyper. hyper itself gives an unread body one read and then stops reading
/// the connection; the bytes the client goes on sending then meet a closed socket, and the
/// kernel answers them with a reset that can destroy the answer before the client reads
/// it. While the body is drained, hyper keeps reading the connection, writes the answer,
/// and keeps the connection alive if the body ends within the bounds.
struct DrainOnDrop {
    inner: Option<Body>,
    /// Resolves when the answer is on its way (or the request was abandoned). Draining
    /// before that would ask hyper for the body, which makes it send `100 Continue`.
    answered: Option<oneshot::Receiver<()>>,
    ended: bool,
    left_unread: Arc<AtomicBool>,
}

impl DrainOnDrop {
    fn new(
        inner: Body,
        answered: oneshot::Receiver<()>,
        left_unread: Arc<AtomicBool>,
    ) -> DrainOnDrop {
        DrainOnDrop {
            inner: Some(inner),
            answered: Some(answered),
            ended: false,
            left_unread,
        }
    }
}

impl HttpBody for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        if self.is_end_stream() {
            return;
        }
        let (Some(body), Some(answered)) = (self.inner.take(), self.answered.take()) else {
            return;
        };
        self.left_unread.store(true, Ordering::Release);
        // Outside a runtime (never in the server) the body is simply dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = answered.await;
                let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain(body)).await;
            });
        }
    }
}

/// Reads and discards `body` until it ends, [`DRAIN_MAX_BYTES`] have come, or nothing has
/// come for [`DRAIN_IDLE`]. Dropping the body then lets hyper close the connection.
async fn drain(mut body: Body) {
    let mut seen: u64 = 0;
    while seen <= DRAIN_MAX_BYTES {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout(DRAIN_IDLE, frame).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Ok(None | Some(Err(_))) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_count_names_values_and_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("12345"));
        headers.insert("host", HeaderValue::from_static("h"));
        assert_eq!(header_bytes(&headers), (3 + 5 + 4) + (4 + 1 + 4));
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_drained_only_after_the_answer() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
        let (answered, answered_rx) = oneshot::channel();
        let left_unread = Arc::new(AtomicBool::new(false));
        let (polled_tx, mut polled_rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures_util::stream::poll_fn(move |cx| {
            let _ = polled_tx.send(());
            rx.poll_recv(cx)
        });
        let body = DrainOnDrop::new(Body::from_stream(stream), answered_rx, left_unread.clone());
        drop(body);
        assert!(left_unread.load(Ordering::Acquire));
        // On this single-threaded runtime each yield lets the spawned drain run: a drain
        // that did not wait for the answer would have polled the body by now.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            polled_rx.try_recv().is_err(),
            "the body was read before the answer"
        );
        answered.send(()).unwrap();
        tx.send(Ok(Bytes::from_static(b"rest"))).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), polled_rx.recv())
            .await
            .unwrap()
            .unwrap();
        // The drain reads what follows too.
        tx.send(Ok(Bytes::from_static(b"more"))).await.unwrap();
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_not_drained() {
        let (_answered, answered_rx) = oneshot::channel();
        let left_unread = Arc::new(AtomicBool::new(false));
        let mut body = DrainOnDrop::new(Body::from("abc"), answered_rx, left_unread.clone());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_some());
        drop(body);
        assert!(!left_unread.load(Ordering::Acquire));
    }
}
