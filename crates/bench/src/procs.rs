//! The processes a benchmark drives: `rushes serve`, `rushes` commands, s3s-fs, and timed
//! baseline commands, with the memory figures Linux keeps for each process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The `rushes` binary built next to this one (`scripts/bench` builds both).
pub fn rushes_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("rushes");
    if !path.exists() {
        bail!(
            "{} is missing; build it with `cargo build --release -p rushes` (scripts/bench does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running `rushes serve`, killed when dropped.
pub struct Server {
    pub url: String,
    pub data: PathBuf,
    child: Child,
    binary: PathBuf,
    /// What it was started with, to start it again the same way.
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server on a free port with its data in `data` (benchmarks measure capacity,
    /// so the per-device request limit is off).
    pub fn start(data: &Path, extra: &[String], env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let mut extra = extra.to_vec();
        if !extra.iter().any(|a| a == "--rate-limit") {
            extra.extend(["--rate-limit".to_owned(), "0".to_owned()]);
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        std::fs::create_dir_all(data)?;
        std::fs::File::create(data.with_extension("log"))?;
        let binary = rushes_binary()?;
        let (child, url) = spawn_server(&binary, data, "127.0.0.1:0", &extra, &env)?;
        Ok(Server {
            url,
            data: data.to_owned(),
            child,
            binary,
            extra,
            env,
        })
    }

    /// `SIGKILL`s the server (no shutdown of any kind, as a power cut would) and starts it
    /// again on the same address and data.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let listen = self.url.trim_start_matches("https://").to_owned();
        let (child, _) = spawn_server(&self.binary, &self.data, &listen, &self.extra, &self.env)?;
        self.child = child;
        Ok(())
    }

    /// The server's log so far (every start appends to it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    pub fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.crt")
    }

    /// An admin command against this server's data (and database, when its environment
    /// names one); its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()?;
        if !out.status.success() {
            bail!(
                "rushes {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many assets are complete.
    pub fn complete_assets(&self) -> anyhow::Result<usize> {
        let list: Value = serde_json::from_str(&self.cli(&["asset", "list", "--json"])?)?;
        Ok(list
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["state"] == "complete").count()))
    }

    /// Waits until `count` assets are complete (polling the admin listing).
    pub fn wait_complete(&self, count: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.complete_assets()? < count {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {count} assets completed",
                    self.complete_assets()?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Pairs a `rushes device` state directory with this server (approved through the CLI).
    pub fn pair_device(&self, state: &Path, name: &str) -> anyhow::Result<()> {
        let mut pair = Command::new(&self.binary)
            .args(["device", "pair", "--server", &self.url, "--name", name])
            .arg("--ca")
            .arg(self.ca())
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = pair.stdout.take().context("pair stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let code = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(code) = line.trim().strip_prefix("Pairing code: ") {
                        break code.to_owned();
                    }
                }
                _ => bail!("rushes device pair printed no code"),
            }
        };
        self.cli(&["pairing", "approve", &code, "--project", "Default"])?;
        std::thread::spawn(move || for _ in lines {});
        if !pair.wait()?.success() {
            bail!("rushes device pair failed");
        }
        Ok(())
    }

    /// Runs `rushes device upload` with `options` on `files`; returns when it exits.
    pub fn device_upload(
        &self,
        state: &Path,
        options: &[&str],
        files: &[&Path],
    ) -> anyhow::Result<()> {
        let out = Command::new(&self.binary)
            .args(["device", "upload", "--json", "--state"])
            .arg(state)
            .args(options)
            .args(files)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !out.status.success() {
            bail!(
                "rushes device upload: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rushes serve` and waits for its "listening on" line; the child and its URL.
fn spawn_server(
    binary: &Path,
    data: &Path,
    listen: &str,
    extra: &[String],
    env: &[(String, String)],
) -> anyhow::Result<(Child, String)> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(data.with_extension("log"))?;
    let mut child = Command::new(binary)
        .args(["serve", "--listen", listen, "--poll-interval", "1"])
        .arg("--data")
        .arg(data)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting rushes serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    break format!("https://{addr}");
                }
            }
            _ => bail!(
                "rushes serve exited: {}",
                std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
            ),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, url))
}

/// Resident memory of a process, from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Now.
    pub rss: u64,
    /// The most it ever held.
    pub peak: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }
}

/// An s3s-fs server on a free port, killed when dropped.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

pub const S3_KEY: &str = "rushes-bench";
pub const S3_SECRET: &str = "rushes-bench-secret";

impl S3 {
    pub fn start(root: &Path) -> anyhow::Result<S3> {
        let binary = std::env::var("RUSHES_S3S_FS")
            .unwrap_or_else(|_| "/opt/rushes-tools/bin/s3s-fs".to_owned());
        let bucket = "bench".to_owned();
        std::fs::create_dir_all(root.join(&bucket))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary} (scripts/install-test-tools)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("s3s-fs did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket,
            child,
        })
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion and times it.
pub fn timed(command: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = command.output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}
