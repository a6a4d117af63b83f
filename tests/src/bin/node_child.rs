//! A node the mesh tests kill with SIGKILL: `node_child <config.json>` starts a node on
//! that configuration (a serialized [`quiver_server::Config`]), prints
//! `ready <quic addr> <https addr>`, and serves until it is killed.

use anyhow::{bail, Context};
use quiver_server::{Config, Node};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path] = args.as_slice() else {
        bail!("usage: node_child <config.json>");
    };
    if let Ok(filter) = std::env::var("QUIVER_TEST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let config: Config = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let node = Node::start(config).await.context("starting the node")?;
    println!("ready {} {}", node.quic_addr(), node.http_addr());
    std::future::pending::<()>().await;
    Ok(())
}
