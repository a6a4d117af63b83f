//! The `quiver` command on a network that blocks UDP: a phone in its own network
//! namespace, nftables dropping all its UDP, registers, befriends, sends, chats, sends a
//! file and receives — over the TCP carrier, found by itself. Needs root (`ip netns`,
//! `nft`), as CI has.

mod common;

use common::{account_in as account, command, dir_of, quiver_in as quiver};
use quiver_tests::netns::Phone;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The median time of three runs of `quiver args` in `ns` (each sends a message).
fn median_send(ns: &str, profile: &Path, text: &str) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|i| {
            let started = Instant::now();
            let sent = quiver(
                Some(ns),
                profile,
                &["send", "alice", &format!("{text} {i}")],
            );
            assert_eq!(sent[0]["event"], "sent");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[1]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_registers_chats_and_sends_files_where_udp_is_blocked() {
    let phone = Phone::new().expect("phone namespace (needs root)");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = quiver_certs::Ca::generate("quiver test CA").unwrap();
    let names = [phone.server_ip().to_string(), "127.0.0.1".to_string()];
    ca.save(&certs).unwrap();
    ca.issue_node("quiver-node", &names)
        .unwrap()
        .save(&certs)
        .unwrap();
    let config = quiver_server::Config {
        data_dir: dir.path().join("node"),
        quic_addr: "0.0.0.0:0".parse().unwrap(),
        http_addr: "0.0.0.0:0".parse().unwrap(),
        cert: Some(certs.join("node.pem")),
        key: Some(certs.join("node.key")),
        ..Default::default()
    };
    let node = quiver_server::Node::start(config).await.unwrap();
    let port = node.http_addr().port();
    let here = format!("https://127.0.0.1:{port}");
    let there = format!("https://{}:{port}", phone.server_ip());
    let ca_path = certs.join("ca.pem").to_str().unwrap().to_owned();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));

    let steps = tokio::task::spawn_blocking(move || {
        let ns = Some(phone.ns.as_str());
        account(None, &alice, &here, &ca_path, "alice");
        account(ns, &bob, &there, &ca_path, "bob");
        quiver(ns, &bob, &["friend", "add", "alice"]);
        quiver(None, &alice, &["friend", "accept", "bob"]);

        // The same command, UDP open and then blocked: what the fallback costs.
        let over_udp = median_send(&phone.ns, &bob, "over udp");
        phone.block_udp().unwrap();
        let over_tcp = median_send(&phone.ns, &bob, "over tcp");
        eprintln!("quiver send, median of 3: {over_udp:?} over UDP, {over_tcp:?} with UDP blocked");
        assert!(
            over_tcp <= over_udp + Duration::from_secs(1),
            "the fallback cost {:?}",
            over_tcp.saturating_sub(over_udp)
        );
        let got = quiver(None, &alice, &["listen", "--count", "6", "--timeout", "20"]);
        let texts: Vec<&str> = got.iter().filter_map(|e| e["text"].as_str()).collect();
        let expected: Vec<String> = ["over udp", "over tcp"]
            .iter()
            .flat_map(|t| (0..3).map(move |i| format!("{t} {i}")))
            .collect();
        assert_eq!(texts, expected, "each once, in order");

        // Chat, typed, through the blocked network.
        let mut chat = command(ns, &bob, &["chat", "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        chat.stdin
            .take()
            .unwrap()
            .write_all(b"typed behind a firewall\n/quit\n")
            .unwrap();
        let out = chat.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("sent #"));
        let got = quiver(None, &alice, &["listen", "--count", "1", "--timeout", "20"]);
        assert_eq!(got[0]["text"], "typed behind a firewall");

        // A file up from behind the firewall, and down on Alice's side.
        let source = dir_of(&bob).join("scan.pdf");
        let content: Vec<u8> = (0..400_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&source, &content).unwrap();
        let sent = quiver(
            ns,
            &bob,
            &[
                "send-file",
                "alice",
                source.to_str().unwrap(),
                "--type",
                "application/pdf",
            ],
        );
        assert_eq!(sent[0]["event"], "file_sent");
        let shown = quiver(None, &alice, &["listen", "--count", "1", "--timeout", "20"]);
        assert_eq!(shown[0]["event"], "file");
        let target = dir_of(&alice).join("scan-copy.pdf");
        let id = shown[0]["id"].to_string();
        let saved = quiver(None, &alice, &["get-file", &id, target.to_str().unwrap()]);
        assert_eq!(saved[0]["verified"], true);
        assert_eq!(std::fs::read(&target).unwrap(), content);

        // And back: Alice's message (over TCP too, pinned with --tcp) reaches Bob behind
        // the firewall.
        quiver(None, &alice, &["--tcp", "send", "bob", "seen it"]);
        // (Receipts for what Bob sent come first.)
        let got = quiver(ns, &bob, &["listen", "--timeout", "3"]);
        let texts: Vec<&str> = got.iter().filter_map(|e| e["text"].as_str()).collect();
        assert_eq!(texts, ["seen it"], "{got:?}");
        drop(phone);
    });
    steps.await.unwrap();
    node.shutdown().await;
}
