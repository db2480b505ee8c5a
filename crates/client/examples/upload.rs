//! Upload files as a C2C device, pairing first if needed, printing events as they come.
//!
//! ```sh
//! cargo run -p rushes-client --example upload -- https://localhost:8443 rushes-data/tls/ca.crt ./state clip.mov
//! ```
//! While it waits for approval, approve the printed code on the server with
//! `rushes pairing approve CODE --project Default`.

use std::path::PathBuf;

use futures_util::StreamExt;
use rushes_client::{Device, Error, PairOptions, ServerOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(ca), Some(state)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: upload SERVER_URL CA_FILE STATE_DIR FILE...");
    };
    let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let state = PathBuf::from(state);

    let device = match Device::open(&state).await {
        Ok(device) => device,
        Err(Error::NotPaired) => {
            let options = PairOptions {
                server: ServerOptions {
                    server,
                    ca: Some(ca.into()),
                },
                state_dir: state.clone(),
                name: Some("example device".into()),
            };
            rushes_client::pair(options, |code| {
                println!(
                    "approve code {} at {}",
                    code.user_code, code.verification_uri_complete
                )
            })
            .await?
        }
        Err(e) => return Err(e.into()),
    };

    let mut events = Box::pin(device.events());
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            println!("{event:?}");
        }
    });
    device.enqueue(&files).await?;
    let summary = device.upload_queue().await?;
    printer.abort();
    println!(
        "{} uploaded, {} failed, {} refused",
        summary.completed, summary.failed, summary.paused_rejected
    );
    Ok(())
}
