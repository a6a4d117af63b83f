//! The `quiver` command against a real node: register, login, friends, send, listen,
//! chat, history (the profile is a client store), send-file and get-file.

mod common;

use common::{account, command, dir_of, quiver};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// A node with its data in `dir/node`: the node, its REST URL and its CA's path.
async fn start_node(dir: &Path) -> (quiver_server::Node, String, String) {
    let config = quiver_server::Config {
        data_dir: dir.join("node"),
        quic_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let node = quiver_server::Node::start(config).await.unwrap();
    let server = format!("https://{}", node.http_addr());
    let ca = node.ca_cert().unwrap().to_str().unwrap().to_owned();
    (node, server, ca)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_profiles_chat_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (node, server, ca) = start_node(dir.path()).await;
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));

    let steps = tokio::task::spawn_blocking(move || {
        for (profile, user) in [(&alice, "alice"), (&bob, "bob")] {
            account(profile, &server, &ca, user);
        }
        let added = quiver(&alice, &["friend", "add", "bob"]);
        assert_eq!(added[0]["status"], "pending");
        let accepted = quiver(&bob, &["friend", "accept", "alice"]);
        assert_eq!(accepted[0]["status"], "friends");
        let list = quiver(&alice, &["friend", "list"]);
        assert_eq!(list[0]["friends"], serde_json::json!(["bob"]));

        let sent = quiver(&alice, &["send", "bob", "hello from the cli"]);
        assert_eq!(sent[0]["event"], "sent");
        let got = quiver(
            &bob,
            &["listen", "--count", "1", "--read", "--timeout", "20"],
        );
        assert_eq!(got[0]["event"], "message");
        assert_eq!(got[0]["from"], "alice");
        assert_eq!(got[0]["text"], "hello from the cli");
        assert_eq!(got[0]["seq"], sent[0]["seq"]);

        let receipts = quiver(&alice, &["listen", "--count", "2", "--timeout", "20"]);
        let kinds: Vec<_> = receipts
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["delivered", "read"]);
        // The cursor in the profile means the next listen starts after what was shown.
        let again = quiver(&bob, &["listen", "--timeout", "1"]);
        assert!(again.is_empty(), "{again:?}");

        // The profile is a store: Alice's history has her message, read by Bob.
        let mine = quiver(&alice, &["history", "bob"]);
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(
            (&mine[0]["text"], &mine[0]["outgoing"], &mine[0]["state"]),
            (&"hello from the cli".into(), &true.into(), &"read".into())
        );
        // Bob on a new profile (a new device) has nothing until he pages the node.
        let fresh = dir_of(&bob).join("bob-laptop");
        let password = ["--user", "bob", "--password", "bob-password"];
        let (srv, ca_arg) = (["--server", &server], ["--ca", &ca]);
        quiver(
            &fresh,
            &[&["login"][..], &srv[..], &ca_arg[..], &password[..]].concat(),
        );
        assert!(quiver(&fresh, &["history", "alice"]).is_empty());
        let paged = quiver(&fresh, &["history", "alice", "--fetch"]);
        assert_eq!(paged.len(), 1, "{paged:?}");
        assert_eq!(paged[0]["text"], "hello from the cli");
        assert_eq!(paged[0]["seq"], sent[0]["seq"]);

        // The interactive mode, driven through stdin.
        let mut chat = command(None, &bob, &["chat", "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run quiver chat");
        chat.stdin
            .take()
            .unwrap()
            .write_all(b"typed by a person\n/quit\n")
            .unwrap();
        let out = chat.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("sent #"));
        let got = quiver(&alice, &["listen", "--count", "1", "--timeout", "20"]);
        assert_eq!(
            (got[0]["from"].as_str(), got[0]["text"].as_str()),
            (Some("bob"), Some("typed by a person"))
        );

        // A file: send-file, listen shows it with an id, get-file saves it checked.
        let source = alice.join("report.txt");
        let content: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&source, &content).unwrap();
        let path = source.to_str().unwrap();
        let sent = quiver(&alice, &["send-file", "bob", path, "--type", "text/plain"]);
        assert_eq!(sent[0]["event"], "file_sent");
        // First the DELIVERED of Bob's typed line, then the file.
        let shown = quiver(&bob, &["listen", "--count", "2", "--timeout", "20"]);
        let shown: Vec<_> = shown.into_iter().filter(|e| e["event"] == "file").collect();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["name"], "report.txt");
        assert_eq!(shown[0]["type"], "text/plain");
        assert_eq!(shown[0]["size"], content.len());
        let id = shown[0]["id"].to_string();
        let target = bob.join("report-copy.txt");
        let saved = quiver(&bob, &["get-file", &id, target.to_str().unwrap()]);
        assert_eq!(saved[0]["event"], "file_saved");
        assert_eq!(saved[0]["verified"], true);
        assert_eq!(std::fs::read(&target).unwrap(), content);

        // Text that would drive a terminal (clear the screen, flip the line) arrives as
        // the same JSON value, with nothing raw in the output.
        let hostile = "evil\x1b[2J\u{9b}31m\u{202e}gpj.exe\u{2028}[bob] fake";
        quiver(&alice, &["send", "bob", hostile]);
        let out = command(None, &bob, &["listen", "--count", "1", "--timeout", "20"])
            .output()
            .unwrap();
        let raw = String::from_utf8(out.stdout).unwrap();
        assert!(
            !raw.trim_end().chars().any(quiver_sdk::text::is_unsafe_char),
            "{raw:?}"
        );
        let got: Value = serde_json::from_str(raw.trim_end()).unwrap();
        assert_eq!(got["text"], hostile);

        // A reader that goes away (`quiver listen | head -0`) ends listen quietly.
        quiver(&alice, &["send", "bob", "one"]);
        quiver(&alice, &["send", "bob", "two"]);
        let mut cut = command(None, &bob, &["listen", "--count", "2", "--timeout", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(cut.stdout.take());
        let out = cut.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
    });
    steps.await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (node, server, ca) = start_node(dir.path()).await;
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| dir.path().join(u));

    let steps = tokio::task::spawn_blocking(move || {
        for (profile, user) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
            account(profile, &server, &ca, user);
        }
        quiver(&alice, &["friend", "add", "bob"]);
        quiver(&bob, &["friend", "accept", "alice"]);

        let made = quiver(&alice, &["group", "create", "team"]);
        assert_eq!(made[0]["status"], "created");
        let group = made[0]["group"].as_str().unwrap().to_owned();
        // A friend is added at once; anyone else is invited and accepts.
        let added = quiver(&alice, &["group", "add", &group, "bob"]);
        assert_eq!(added[0]["status"], "added");
        let invited = quiver(&alice, &["group", "invite", &group, "carol"]);
        assert_eq!(invited[0]["status"], "invited");
        let waiting = quiver(&carol, &["group", "list"]);
        assert_eq!(waiting[0]["invitations"][0]["group"], group.as_str());
        let accepted = quiver(&carol, &["group", "accept", &group]);
        assert_eq!(accepted[0]["status"], "accepted");
        let members = quiver(&bob, &["group", "members", &group]);
        let roles: Vec<(String, String)> = members[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["user"].to_string(), m["role"].to_string()))
            .collect();
        assert_eq!(roles.len(), 3, "{roles:?}");
        assert!(roles.contains(&("\"alice\"".into(), "\"owner\"".into())));

        let sent = quiver(&alice, &["send", "--group", &group, "hello team"]);
        assert_eq!(sent[0]["event"], "sent");
        // Bob sees the group from the entry that added him: his add, Carol's, the message.
        let got = quiver(&bob, &["listen", "--count", "3", "--timeout", "20"]);
        let kinds: Vec<&str> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["group_change", "group_change", "group_message"]);
        assert_eq!(got[2]["text"], "hello team");
        assert_eq!(got[2]["seq"], sent[0]["seq"]);
        // What listen took is acknowledged: the next listen starts after it.
        let again = quiver(&bob, &["listen", "--timeout", "1"]);
        assert!(again.is_empty(), "{again:?}");
        // A file to the group: listen shows it with an id, get-file --group saves it.
        let photo = alice.join("team.txt");
        std::fs::write(&photo, "a file for the team").unwrap();
        let file_sent = quiver(
            &alice,
            &["send-file", "--group", &group, photo.to_str().unwrap()],
        );
        assert_eq!(
            (&file_sent[0]["event"], &file_sent[0]["group"]),
            (&"file_sent".into(), &group.as_str().into())
        );
        let got = quiver(&bob, &["listen", "--count", "1", "--timeout", "20"]);
        assert_eq!(got[0]["event"], "group_file", "{got:?}");
        assert_eq!(got[0]["name"], "team.txt");
        let id = got[0]["id"].to_string();
        let target = bob.join("saved.txt");
        let saved = quiver(
            &bob,
            &["get-file", "--group", &group, &id, target.to_str().unwrap()],
        );
        assert_eq!(saved[0]["verified"], true);
        assert_eq!(std::fs::read(&target).unwrap(), b"a file for the team");
        let receipts = quiver(
            &alice,
            &["group", "receipts", &group, &sent[0]["seq"].to_string()],
        );
        assert_eq!(receipts[0]["members"], 3);
        assert!(receipts[0]["delivered"].as_u64().unwrap() >= 1);

        // Carol, a plain member, may not remove; Alice may, and Carol's send is refused.
        let out = command(None, &carol, &["group", "remove", &group, "bob"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not_member"));
        let removed = quiver(&alice, &["group", "remove", &group, "carol"]);
        assert_eq!(removed[0]["status"], "removed");
        let out = command(None, &carol, &["send", "--group", &group, "still here?"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a friend or member"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    steps.await.unwrap();
    node.shutdown().await;
}
