//! `quiver-certs`: make a dev CA and node certificates.
//!
//! Run with `cargo run -p quiver-certs -- ca --out certs/` and then
//! `cargo run -p quiver-certs -- node --ca certs/ --name node1 --san localhost --out certs/node1/`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use quiver_certs::Ca;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Make a Quiver dev CA and node certificates (PEM)")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new CA: writes ca.pem and ca.key.
    Ca {
        /// Folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Quiver dev CA")]
        name: String,
    },
    /// Issue a node certificate from a CA folder: writes node.pem and node.key.
    Node {
        /// Folder holding ca.pem and ca.key.
        #[arg(long)]
        ca: PathBuf,
        /// The CA's common name (as given to `ca`).
        #[arg(long, default_value = "Quiver dev CA")]
        ca_name: String,
        /// The node's name (certificate common name).
        #[arg(long)]
        name: String,
        /// DNS names and IP addresses the node answers on (repeatable).
        #[arg(long = "san", default_values = ["localhost", "127.0.0.1", "::1"])]
        sans: Vec<String>,
        /// Folder to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Ca { out, name } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            Ca::generate(&name)?.save(&out)?;
            println!("{}", out.join(quiver_certs::CA_CERT).display());
        }
        Cmd::Node {
            ca,
            ca_name,
            name,
            sans,
            out,
        } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            Ca::load(&ca, &ca_name)?
                .issue_node(&name, &sans)?
                .save(&out)?;
            println!("{}", out.join(quiver_certs::NODE_CERT).display());
        }
    }
    Ok(())
}
