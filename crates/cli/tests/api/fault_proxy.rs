//! A fault-injecting TCP proxy for the client tests.
//!
//! The device client must get every clip through a bad network: connections dropped in the
//! middle of a part, links that stall and then die, resets, and the network going away
//! altogether. Real networks do that at random; a test needs it on a schedule. This proxy
//! sits between `rushes device` and `rushes serve` (the client pairs with the proxy's URL,
//! and because the server derives part URLs from the `Host` it was reached with, every
//! request, part PUTs included, goes through it) and forwards raw TCP, so TLS stays end to
//! end and the client sees exactly what it would see on a broken network.
//!
//! What happens to a connection is decided when it is accepted, from its number (0, 1, 2,
//! ... counted since the schedule was installed): a list of [`Fault`]s, each firing when the
//! client has sent a given number of bytes on that connection. Because faults are triggered
//! by bytes the *client* sent, a drop or reset always cuts a request short: the server never
//! sees the rest of it.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&app.url, |_| vec![]);          // pass everything
//! app.pair_device_cli(state, "Cam", Some(&proxy.url));
//! proxy.set_schedule(|k| if k < 3 { vec![Fault::reset_at(2 * MIB as u64)] } else { vec![] });
//! // ... upload ...
//! assert!(proxy.stats().resets > 0);
//! ```
//!
//! [`FaultProxy::set_down`] simulates the network going away: open connections are reset,
//! new ones are reset as soon as they are accepted, until it is restored.
//!
//! The proxy runs on its own thread and Tokio runtime, so it keeps working while a test
//! blocks (on `Command::output`, a channel, ...). Dropping the [`FaultProxy`] stops it and
//! closes every connection it holds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a fault does once it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward nothing, either way, for this long; then go on with the next fault (or
    /// forwarding). Keep it well under the client's 60 s read timeout.
    Stall(Duration),
    /// Close both sides with a FIN, as a proxy or NAT that gives up would.
    Drop,
    /// Close both sides with a TCP RST (zero linger).
    Reset,
}

/// One fault on one connection: `action` once the client has sent `at` bytes on it (TLS
/// records included). The first `at` bytes are forwarded; the rest of that read is held
/// back until the fault is over (a stall) or discarded (a drop or reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub at: u64,
    pub action: Action,
}

impl Fault {
    pub fn drop_at(at: u64) -> Fault {
        Fault {
            at,
            action: Action::Drop,
        }
    }

    pub fn reset_at(at: u64) -> Fault {
        Fault {
            at,
            action: Action::Reset,
        }
    }

    pub fn stall_at(at: u64, stall: Duration) -> Fault {
        Fault {
            at,
            action: Action::Stall(stall),
        }
    }
}

/// What to do to connection number `k`: its faults in the order they fire (by `at`; a
/// `Drop` or `Reset` ends the list). An empty list forwards everything.
pub type Schedule = Arc<dyn Fn(u64) -> Vec<Fault> + Send + Sync>;

/// How often each thing really happened (faults that were scheduled but never reached
/// their byte count are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and forwarded (not counting those refused while down).
    pub connections: u64,
    pub drops: u64,
    pub resets: u64,
    pub stalls: u64,
    /// Connections reset on accept because the network was down.
    pub refused: u64,
    /// Open connections reset when the network went down.
    pub killed: u64,
    /// Connections reset because the target could not be reached (the server is away).
    pub unreachable: u64,
    /// Bytes forwarded client to server, and server to client.
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Stats {
    /// Every fault that cut or delayed a connection.
    pub fn faults(&self) -> u64 {
        self.drops + self.resets + self.stalls + self.refused + self.killed
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    drops: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
    refused: AtomicU64,
    killed: AtomicU64,
    unreachable: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Shared {
    target: SocketAddr,
    /// The schedule and how many connections it has been asked about.
    schedule: RwLock<(Schedule, u64)>,
    down: watch::Sender<bool>,
    stopping: watch::Sender<bool>,
    counters: Counters,
    /// Set while the runtime thread is alive.
    running: AtomicBool,
}

/// A running proxy; see the module documentation.
pub struct FaultProxy {
    /// `https://127.0.0.1:PORT`: give it to `rushes device pair --server`.
    pub url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` (`https://HOST:PORT` or `HOST:PORT`) on a free local port,
    /// injecting faults by `schedule`.
    pub fn start(
        target: &str,
        schedule: impl Fn(u64) -> Vec<Fault> + Send + Sync + 'static,
    ) -> FaultProxy {
        let target: SocketAddr = target
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("proxy target is IP:PORT");
        let shared = Arc::new(Shared {
            target,
            schedule: RwLock::new((Arc::new(schedule), 0)),
            down: watch::channel(false).0,
            stopping: watch::channel(false).0,
            counters: Counters::default(),
            running: AtomicBool::new(true),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || run(listener, shared))
                .expect("proxy thread")
        };
        FaultProxy {
            url: format!("https://{addr}"),
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// Replaces the schedule; connections accepted from now on are numbered from 0 again.
    /// Open connections keep the faults they were given.
    pub fn set_schedule(&self, schedule: impl Fn(u64) -> Vec<Fault> + Send + Sync + 'static) {
        *self.shared.schedule.write().expect("schedule lock") = (Arc::new(schedule), 0);
    }

    /// `true`: the network is down: open connections are reset and new ones are reset as
    /// soon as they are accepted. `false`: back to normal.
    pub fn set_down(&self, down: bool) {
        self.shared.down.send_replace(down);
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            drops: get(&c.drops),
            resets: get(&c.resets),
            stalls: get(&c.stalls),
            refused: get(&c.refused),
            killed: get(&c.killed),
            unreachable: get(&c.unreachable),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
        }
    }

    /// Whether the proxy thread is still serving.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener).expect("proxy listener");
        let mut stopping = shared.stopping.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((client, _)) = accepted else {
                // Out of descriptors or similar: try again shortly, without spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if *shared.down.borrow() {
                bump(&shared.counters.refused, 1);
                reset(client);
                continue;
            }
            let faults = {
                let mut guard = shared.schedule.write().expect("schedule lock");
                let k = guard.1;
                guard.1 += 1;
                (guard.0)(k)
            };
            bump(&shared.counters.connections, 1);
            tokio::spawn(connection(client, faults, shared.clone()));
        }
    });
    // Open connections end with the runtime: their sockets close here.
    runtime.shutdown_timeout(Duration::from_secs(2));
    shared.running.store(false, Ordering::Relaxed);
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// How the client-to-server direction ended.
enum Up {
    Eof,
    Broken,
    Drop,
    Reset,
}

/// How a connection ended.
enum End {
    Clean,
    Drop,
    Reset,
    Killed,
}

async fn connection(mut client: TcpStream, faults: Vec<Fault>, shared: Arc<Shared>) {
    let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(shared.target));
    let mut server = match connect.await {
        Ok(Ok(server)) => server,
        // The server is away: the client sees its connection reset.
        _ => {
            bump(&shared.counters.unreachable, 1);
            return reset(client);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let counters = &shared.counters;
    let mut down = shared.down.subscribe();
    let mut stopping = shared.stopping.subscribe();
    let (frozen_tx, frozen_rx) = watch::channel(false);
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump_up(
            &mut client_read,
            &mut server_write,
            &faults,
            &frozen_tx,
            counters,
        );
        let down_pump = pump_down(&mut server_read, &mut client_write, frozen_rx, counters);
        tokio::pin!(up, down_pump);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                _ = wait_true(&mut down) => break End::Killed,
                _ = wait_true(&mut stopping) => break End::Killed,
                ended = &mut up, if !up_done => match ended {
                    Up::Eof => {
                        up_done = true;
                        if down_done {
                            break End::Clean;
                        }
                    }
                    Up::Broken => break End::Clean,
                    Up::Drop => break End::Drop,
                    Up::Reset => break End::Reset,
                },
                broken = &mut down_pump, if !down_done => {
                    down_done = true;
                    if broken || up_done {
                        break End::Clean;
                    }
                }
            }
        }
    };
    match end {
        End::Clean => {}
        End::Drop => {
            bump(&counters.drops, 1);
            // A FIN both ways. Whatever the client still sends is read and discarded (for a
            // bounded time): closing with unread data would turn the FIN into a reset.
            let _ = server.shutdown().await;
            let _ = client.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), drain(&mut client)).await;
        }
        End::Reset => {
            bump(&counters.resets, 1);
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        End::Killed => {
            if !*shared.stopping.borrow() {
                bump(&counters.killed, 1);
            }
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

async fn wait_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

async fn drain(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Client to server, counting bytes and firing `faults` on the way.
async fn pump_up(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    faults: &[Fault],
    frozen: &watch::Sender<bool>,
    counters: &Counters,
) -> Up {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0;
    let mut pending = faults.iter().peekable();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Up::Eof;
            }
            Ok(n) => n,
            Err(_) => return Up::Broken,
        };
        let mut chunk = &buf[..n];
        // Every fault whose byte count falls in this read, in order.
        while let Some(fault) = pending.next_if(|f| sent + chunk.len() as u64 > f.at) {
            let head = fault.at.saturating_sub(sent) as usize;
            if to.write_all(&chunk[..head]).await.is_err() {
                return Up::Broken;
            }
            bump(&counters.bytes_up, head as u64);
            sent += head as u64;
            chunk = &chunk[head..];
            match fault.action {
                Action::Stall(stall) => {
                    bump(&counters.stalls, 1);
                    frozen.send_replace(true);
                    tokio::time::sleep(stall).await;
                    frozen.send_replace(false);
                }
                Action::Drop => return Up::Drop,
                Action::Reset => return Up::Reset,
            }
        }
        if to.write_all(chunk).await.is_err() {
            return Up::Broken;
        }
        bump(&counters.bytes_up, chunk.len() as u64);
        sent += chunk.len() as u64;
    }
}

/// Server to client, held while a stall is on. Returns whether the connection broke (as
/// opposed to the server closing its side).
async fn pump_down(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut frozen: watch::Receiver<bool>,
    counters: &Counters,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return false;
            }
            Ok(n) => n,
            Err(_) => return true,
        };
        // The sender lives as long as this connection, so this cannot fail early.
        let _ = frozen.wait_for(|f| !*f).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return true;
        }
        bump(&counters.bytes_down, n as u64);
    }
}
