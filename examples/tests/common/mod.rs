//! Running the `quiver` command in tests: in this namespace or, for the firewall tests,
//! inside a network namespace (`ip netns exec`).

// Each test file that includes this module uses only part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `quiver --profile profile args`, in namespace `ns` if given, not yet run.
pub fn command(ns: Option<&str>, profile: &Path, args: &[&str]) -> Command {
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_quiver")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_quiver")),
    };
    command.arg("--profile").arg(profile).args(args);
    command
}

/// Runs `quiver` (in `ns`, if given), which must succeed; its JSON lines.
pub fn quiver_in(ns: Option<&str>, profile: &Path, args: &[&str]) -> Vec<Value> {
    let out = command(ns, profile, args).output().expect("run quiver");
    assert!(
        out.status.success(),
        "quiver {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Runs `quiver` here, which must succeed; its JSON lines.
pub fn quiver(profile: &Path, args: &[&str]) -> Vec<Value> {
    quiver_in(None, profile, args)
}

/// Registers `user` at `server` in a new profile (in `ns`, if given) and logs in.
pub fn account_in(ns: Option<&str>, profile: &Path, server: &str, ca: &str, user: &str) {
    let password = format!("{user}-password");
    let who = ["--user", user, "--password", &password];
    let place = ["--server", server, "--ca", ca];
    quiver_in(ns, profile, &[&["register"], &place[..], &who[..]].concat());
    quiver_in(ns, profile, &[&["login"][..], &who[..]].concat());
}

/// [`account_in`] here.
pub fn account(profile: &Path, server: &str, ca: &str, user: &str) {
    account_in(None, profile, server, ca, user)
}

/// The folder a profile lives in.
pub fn dir_of(profile: &Path) -> &Path {
    profile.parent().expect("a profile folder has a parent")
}
