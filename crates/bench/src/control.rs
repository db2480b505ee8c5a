//! Control-plane load: many devices, each on its own kept-alive TLS connection, calling one
//! route as fast as the server answers, for a fixed time.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Certificate, Client};
use rushes_proto::auth::{DeviceCodeResponse, GRANT_DEVICE_CODE, TokenResponse};
use serde_json::json;

use crate::procs::Server;

const CLIENT_SECRET: &str = "rushes-bench-model";

/// A paired device with its own connection.
pub struct Device {
    pub client_id: String,
    pub client: Client,
    pub tokens: TokenResponse,
}

/// A client with a connection pool of its own, trusting only the server's CA.
pub fn client(server: &Server) -> anyhow::Result<Client> {
    let pem = std::fs::read(server.ca())?;
    Ok(Client::builder()
        .tls_certs_only([Certificate::from_pem(&pem)?])
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(None)
        .build()?)
}

/// Pairs `count` devices through the API, approving their codes with the admin CLI.
pub async fn pair(server: &Server, count: usize) -> anyhow::Result<Vec<Device>> {
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let client = client(server)?;
        let client_id = format!("bench-device-{i:03}");
        let form = reqwest::multipart::Form::new()
            .text("client_id", client_id.clone())
            .text("client_secret", CLIENT_SECRET)
            .text("scope", "asset_create offline");
        let code: DeviceCodeResponse = client
            .post(format!("{}/v2/auth/device/code", server.url))
            .header("x-client-version", "1.0")
            .multipart(form)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        server.cli(&[
            "pairing",
            "approve",
            &code.user_code,
            "--project",
            "Default",
        ])?;
        pending.push((client_id, client, code.device_code));
    }
    let mut devices = Vec::with_capacity(count);
    for (client_id, client, device_code) in pending {
        let tokens: TokenResponse = client
            .post(format!("{}/v2/auth/token", server.url))
            .form(&[
                ("grant_type", GRANT_DEVICE_CODE),
                ("client_id", &client_id),
                ("device_code", &device_code),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("token answer")?;
        devices.push(Device {
            client_id,
            client,
            tokens,
        });
    }
    Ok(devices)
}

/// What a load phase measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Rate {
    pub requests: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// `GET /health`: the same server, TLS and HTTP stack, no work.
    Noop,
    CreateAsset,
    Refresh,
}

/// Every device calls `call` in a loop for `duration`; returns the rate and latencies.
pub async fn run(
    server: &Server,
    devices: &mut [Device],
    call: Call,
    duration: Duration,
) -> anyhow::Result<Rate> {
    eprintln!("   {call:?} for {} s", duration.as_secs());
    let url = server.url.clone();
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let tasks: Vec<_> = devices
        .iter_mut()
        .map(|device| {
            let url = url.clone();
            async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    one(&url, device, call, n).await?;
                    latencies.push(t.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            }
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    for result in futures_util::future::join_all(tasks).await {
        all.extend(result?);
    }
    let took = start.elapsed();
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Rate {
        requests: all.len() as u64,
        per_second: all.len() as f64 / took.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    })
}

async fn one(url: &str, device: &mut Device, call: Call, n: u64) -> anyhow::Result<()> {
    let res = match call {
        Call::Noop => device.client.get(format!("{url}/health")).send().await?,
        Call::CreateAsset => {
            device
                .client
                .post(format!("{url}/v2/devices/assets"))
                .bearer_auth(&device.tokens.access_token)
                .json(&json!({
                    "name": format!("{}-{n}.mov", device.client_id),
                    "filesize": 1_048_576,
                    "filetype": "video/quicktime",
                }))
                .send()
                .await?
        }
        Call::Refresh => {
            let refresh = device
                .tokens
                .refresh_token
                .clone()
                .context("no refresh token")?;
            let res = device
                .client
                .post(format!("{url}/v2/auth/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &device.client_id),
                    ("client_secret", CLIENT_SECRET),
                    ("refresh_token", &refresh),
                ])
                .send()
                .await?;
            if !res.status().is_success() {
                bail!("refresh answered {}", res.status());
            }
            device.tokens = res.json().await?;
            return Ok(());
        }
    };
    if !res.status().is_success() {
        bail!("{} answered {}", res.url().path(), res.status());
    }
    // Read the body so the connection is reused.
    res.bytes().await?;
    Ok(())
}

/// Opens `count` connections, each making one request, and keeps them open (idle) until
/// the returned clients are dropped.
pub async fn idle_connections(server: &Server, count: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let client = client(server)?;
        client
            .get(format!("{}/health", server.url))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        clients.push(client);
    }
    Ok(clients)
}
