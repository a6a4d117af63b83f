//! `quiver`: a scriptable Quiver client, in the spirit of `mosquitto_pub`/`_sub`.
//!
//! Run with `cargo run -p quiver-cli -- --help`. Every command reads and updates a profile
//! folder (`--profile`, default `~/.quiver`). Machine-readable commands print one JSON
//! object per line.
//!
//! ```text
//! quiver --profile /tmp/alice register --server https://127.0.0.1:8443 --ca quiver-data/certs/ca.pem --user alice --password alice-password
//! quiver --profile /tmp/alice login --user alice --password alice-password
//! quiver --profile /tmp/alice friend add bob
//! quiver --profile /tmp/alice send bob "hello"
//! quiver --profile /tmp/bob listen --count 1 --read
//! quiver --profile /tmp/bob chat alice
//! quiver --profile /tmp/alice send-file bob ./photo.jpg --type image/jpeg
//! quiver --profile /tmp/bob listen --count 1          # {"event":"file","id":3,...}
//! quiver --profile /tmp/bob get-file 3 ./photo.jpg
//! quiver --profile /tmp/alice group create team  # {"group":"g…",...}
//! quiver --profile /tmp/alice group add g… bob
//! quiver --profile /tmp/alice send --group g… "hello team"
//! ```

mod group;
mod output;
mod profile;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use output::{say, say_json, StdoutClosed};
use profile::Profile;
use quiver_sdk::text::terminal_safe;
use quiver_sdk::{Client, Event, Events, GroupId, ReceiptKind, UserId};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
#[command(name = "quiver", about = "Quiver command-line client")]
struct Args {
    /// Profile folder: server, CA and the client store (session, keys, cursor, outbox, history).
    #[arg(long, env = "QUIVER_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// Carry the connection over TCP only (QUIC in TLS over TCP, as where UDP is
    /// blocked). Without it the client tries UDP and falls back to TCP by itself.
    #[arg(long, env = "QUIVER_TCP", global = true)]
    tcp: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create an account.
    Register(Account),
    /// Log in and keep the token and device id in the profile.
    Login(Account),
    /// Friend requests and friendships.
    Friend {
        #[command(subcommand)]
        cmd: FriendCmd,
    },
    /// Groups: create, list, members, add, invite, accept, remove, leave, rename, role.
    Group {
        #[command(subcommand)]
        cmd: group::GroupCmd,
    },
    /// Send one message; prints it once the node has it durably (SENT), then exits.
    /// `send bob "hi"` to a friend, `send --group g… "hi"` to a group.
    Send {
        /// To a group (its id) instead of a friend.
        #[arg(long)]
        group: Option<String>,
        /// The friend, then the text; or only the text with `--group`.
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Print incoming messages and receipts, one JSON object per line.
    Listen {
        /// Stop after this many messages and receipts.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Mark every message shown as read.
        #[arg(long)]
        read: bool,
        /// Show yourself online and print friends' presence and typing too.
        #[arg(long)]
        presence: bool,
    },
    /// Chat interactively with a friend (or a group with `--group`): type lines, see
    /// replies, receipts and group traffic.
    Chat {
        /// The friend, or the group id with `--group`.
        with: String,
        /// `with` is a group.
        #[arg(long)]
        group: bool,
    },
    /// Send a file; prints it once uploaded and its message is durable (SENT). Run it
    /// again after an interruption: it resumes where the node stopped.
    /// `send-file bob a.jpg` to a friend, `send-file --group g… a.jpg` to a group.
    SendFile {
        /// To a group (its id) instead of a friend.
        #[arg(long)]
        group: Option<String>,
        /// The friend, then the file; or only the file with `--group`.
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
        /// Its media type.
        #[arg(long = "type", default_value = "application/octet-stream")]
        media_type: String,
    },
    /// Download a file that `listen` showed (by its `id`), check its SHA-256 and save it.
    /// Run it again after an interruption: it resumes from `<path>.part`.
    GetFile {
        /// A file sent to this group (its id): `listen` printed it as a `group_file`.
        #[arg(long)]
        group: Option<String>,
        /// The `id` that `listen` printed for the file.
        id: u64,
        /// Where to save it.
        path: PathBuf,
    },
    /// Print the conversation with a friend from the profile's store, newest first, one
    /// JSON object per line; with `--fetch`, page the node's history into the store first.
    History {
        /// The friend.
        with: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Page back through the node's history first (for a new or wiped profile).
        #[arg(long)]
        fetch: bool,
    },
}

#[derive(clap::Args)]
struct Account {
    #[command(flatten)]
    server: ServerArgs,
    /// User name: 3-32 of a-z, 0-9, '_' and '-'.
    #[arg(long)]
    user: String,
    /// Password (at least 8 bytes).
    #[arg(long, env = "QUIVER_PASSWORD")]
    password: String,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// REST base URL of the node, e.g. https://127.0.0.1:8443 (remembered in the profile).
    #[arg(long)]
    server: Option<String>,
    /// CA certificate (PEM) to trust (remembered in the profile).
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FriendCmd {
    /// Ask a user to be friends (accepts if they asked you already).
    Add {
        /// The user.
        user: String,
    },
    /// Accept a user's request.
    Accept {
        /// The user.
        user: String,
    },
    /// End a friendship (or withdraw or refuse a request).
    Remove {
        /// The user.
        user: String,
    },
    /// Block a user: ends the friendship, and their requests are dropped unseen.
    Block {
        /// The user.
        user: String,
    },
    /// Lift a block.
    Unblock {
        /// The user.
        user: String,
    },
    /// List friends, pending requests and blocked users.
    List,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let dir = match args.profile {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set")?).join(".quiver"),
    };
    let mut profile = Profile::load(&dir)?;
    profile.tcp_only = args.tcp;
    let outcome = run(args.cmd, &mut profile).await;
    profile.save(&dir)?;
    match outcome {
        // `quiver listen | head -1`: the reader has all it wanted.
        Err(e) if e.is::<StdoutClosed>() => Ok(()),
        other => other,
    }
}

async fn run(cmd: Cmd, profile: &mut Profile) -> anyhow::Result<()> {
    match cmd {
        Cmd::Register(Account {
            server,
            user,
            password,
        }) => {
            remember(profile, server);
            profile.rest()?.register(&user, &password).await?;
            say_json(&json!({ "event": "registered", "user": user }))?;
        }
        Cmd::Login(Account {
            server,
            user,
            password,
        }) => {
            remember(profile, server);
            let stored = profile.app()?.store().session()?;
            if stored.is_some_and(|s| s.user.as_str() != user) {
                // Another user's session, keys and history are not this one's.
                profile.forget_store()?;
            }
            let app = profile.app()?;
            let session = app.login(&user, &password).await?;
            app.friends().await?;
            say_json(
                &json!({ "event": "logged_in", "user": user, "device": session.device.to_string() }),
            )?;
        }
        Cmd::Friend { cmd } => friend(cmd, profile).await?,
        Cmd::Group { cmd } => group::run(cmd, profile).await?,
        Cmd::Send {
            group: Some(group),
            args,
        } => {
            let [text] = args.as_slice() else {
                bail!("with --group, give only the text");
            };
            let group = GroupId::parse(&group)?;
            let (client, _events) = connect(profile).await?;
            let sent = client.send_group(&group, text.as_bytes()).await?;
            say_json(&json!({
                "event": "sent", "group": group, "id": sent.id.to_string(), "seq": sent.seq.0,
            }))?;
            client.close().await;
        }
        Cmd::Send { group: None, args } => {
            let [to, text] = args.as_slice() else {
                bail!("give the friend and the text");
            };
            let to = UserId::parse(to)?;
            let (client, _events) = connect(profile).await?;
            let sent = client.send(&to, text.as_bytes()).await?;
            say_json(
                &json!({ "event": "sent", "to": to, "id": sent.id.to_string(), "seq": sent.seq.0 }),
            )?;
            client.close().await;
        }
        Cmd::Listen {
            count,
            timeout,
            read,
            presence,
        } => {
            let (client, events) = connect_showing(profile, presence).await?;
            let limit = timeout
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::MAX);
            let listening = listen(&client, events, count, read, profile);
            let outcome = tokio::time::timeout(limit, listening)
                .await
                .unwrap_or(Ok(()));
            client.close().await;
            outcome?;
        }
        Cmd::SendFile {
            group,
            args,
            media_type,
        } => {
            let (to, path) = match (group, args.as_slice()) {
                (Some(group), [path]) => (Target::Group(GroupId::parse(&group)?), path),
                (None, [to, path]) => (Target::Friend(UserId::parse(to)?), path),
                (Some(_), _) => bail!("with --group, give only the file"),
                (None, _) => bail!("give the friend and the file"),
            };
            let path = PathBuf::from(path);
            let (client, _events) = connect(profile).await?;
            let bar = progress_bar(&format!("sending {}", path.display()));
            let on_progress = shows(&bar);
            let sent = match &to {
                Target::Group(group) => {
                    client.send_group_file(group, &path, &media_type, on_progress)
                }
                Target::Friend(to) => client.send_file(to, &path, &media_type, on_progress),
            }
            .await;
            bar.finish_and_clear();
            let sent = sent?;
            let (key, name) = match &to {
                Target::Group(group) => ("group", group.to_string()),
                Target::Friend(to) => ("to", to.to_string()),
            };
            say_json(&json!({
                "event": "file_sent", key: name, "seq": sent.sent.seq.0,
                "id": sent.sent.id.to_string(), "blob": sent.file.blob.to_hex(),
                "sealed_bytes": sent.file.size, "resumed_from": sent.report.starts.first(),
            }))?;
            client.close().await;
        }
        Cmd::History { with, limit, fetch } => {
            history(profile, &UserId::parse(&with)?, limit, fetch).await?
        }
        Cmd::GetFile { group, id, path } => {
            let saved = match &group {
                None => profile.files.get(&id),
                Some(group) => profile.group_files.get(group).and_then(|f| f.get(&id)),
            };
            let offer = saved
                .with_context(|| format!("no file {id} here: `quiver listen` shows files"))?
                .offer()?;
            let (client, _events) = connect(profile).await?;
            let bar = progress_bar(&format!("receiving {}", offer.info.safe_name()));
            let report = client.download(&offer, &path, shows(&bar)).await;
            bar.finish_and_clear();
            let report = report?;
            say_json(&json!({
                "event": "file_saved", "path": path, "name": offer.info.name,
                "size": offer.info.size, "sha256": profile::hex(&offer.info.sha256),
                "verified": true, "resumed_from": report.starts.first(),
            }))?;
            client.close().await;
        }
        Cmd::Chat { with, group: true } => {
            let with = GroupId::parse(&with)?;
            let (client, events) = connect_showing(profile, true).await?;
            let outcome = chat(&client, events, &Target::Group(with)).await;
            client.close().await;
            outcome?;
        }
        Cmd::Chat { with, group: false } => {
            let with = UserId::parse(&with)?;
            let (client, events) = connect_showing(profile, true).await?;
            if !profile.knows(&with)? {
                client.close().await;
                bail!("{with} is not your friend yet: `quiver friend add {with}`");
            }
            let outcome = chat(&client, events, &Target::Friend(with)).await;
            client.close().await;
            outcome?;
        }
    }
    Ok(())
}

fn remember(profile: &mut Profile, server: ServerArgs) {
    if let Some(url) = server.server {
        profile.server = Some(url);
    }
    if let Some(ca) = server.ca {
        profile.ca = Some(std::fs::canonicalize(&ca).unwrap_or(ca));
    }
}

async fn friend(cmd: FriendCmd, profile: &mut Profile) -> anyhow::Result<()> {
    let app = profile.app()?;
    let rest = app.rest().clone();
    let token = profile.token()?;
    match cmd {
        FriendCmd::Add { user } => {
            let status = rest.request_friend(&token, &user).await?;
            say_json(&json!({ "event": "friend", "user": status.user, "status": status.status }))?;
        }
        FriendCmd::Accept { user } => {
            let status = rest.accept_friend(&token, &user).await?;
            say_json(&json!({ "event": "friend", "user": status.user, "status": status.status }))?;
        }
        FriendCmd::Remove { user } => {
            let status = rest.remove_friend(&token, &user).await?;
            say_json(&json!({ "event": "friend", "user": status.user, "status": status.status }))?;
        }
        FriendCmd::Block { user } => {
            let status = rest.block(&token, &user).await?;
            say_json(&json!({ "event": "friend", "user": status.user, "status": status.status }))?;
        }
        FriendCmd::Unblock { user } => {
            let status = rest.unblock(&token, &user).await?;
            say_json(&json!({ "event": "friend", "user": status.user, "status": status.status }))?;
        }
        FriendCmd::List => {
            let friends = app.friends().await?;
            let names: Vec<_> = friends.friends.iter().map(|f| f.user.to_string()).collect();
            say_json(&json!({
                "friends": names, "incoming": friends.incoming, "outgoing": friends.outgoing,
                "blocked": friends.blocked,
            }))?;
            return Ok(());
        }
    }
    app.friends().await?;
    Ok(())
}

/// Prints the conversation with `with` from the store, after paging the node's history
/// into it when `fetch`.
async fn history(profile: &Profile, with: &UserId, limit: u32, fetch: bool) -> anyhow::Result<()> {
    if fetch {
        let (client, _events) = connect(profile).await?;
        let of = quiver_sdk::HistoryOf::Friend(with.clone());
        let mut before = None;
        loop {
            let page = client
                .history(&of, before, quiver_sdk::MAX_HISTORY_PAGE)
                .await?;
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        client.close().await;
    }
    let store = profile.app()?.store().clone();
    let page = store.messages(&quiver_sdk::Conversation::Friend(with.clone()), None, limit)?;
    for m in page.messages {
        say_json(&json!({
            "from": m.from, "outgoing": m.outgoing, "id": m.id.to_string(),
            "seq": m.seq.map(|s| s.0), "sent_at_ms": m.sent_at_ms,
            "state": m.state.name(), "text": m.text(),
        }))?;
    }
    Ok(())
}

/// Connects with the profile's store: keys and cursor from it, messages a cut-short run
/// left in its outbox sent first.
async fn connect(profile: &Profile) -> anyhow::Result<(Client, Events)> {
    connect_showing(profile, false).await
}

/// [`connect`], showing presence `Online` (and getting friends' presence and typing)
/// when `presence`.
async fn connect_showing(profile: &Profile, presence: bool) -> anyhow::Result<(Client, Events)> {
    let app = profile.app()?;
    let token = profile.token()?;
    let group_keys = group::keys(app.rest(), &token).await?;
    Ok(app
        .connect_with(|o| {
            o.group_keys = group_keys;
            o.presence = presence.then_some(quiver_sdk::PresenceState::Online);
            o.tcp_only = profile.tcp_only;
        })
        .await?)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_owned());
    bar
}

/// A progress callback that moves `bar`.
fn shows(bar: &indicatif::ProgressBar) -> impl FnMut(quiver_sdk::Progress) + Send + 'static {
    let bar = bar.clone();
    move |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    }
}

fn receipt_kind(kind: ReceiptKind) -> &'static str {
    match kind {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
    }
}

/// One event as a JSON line.
fn event_json(event: &Event) -> serde_json::Value {
    match event {
        Event::Message(m) => match &m.file {
            Some(file) => json!({
                "event": "file", "from": m.from, "seq": m.seq.0, "id": m.seq.0,
                "sent_at_ms": m.sent_at_ms, "name": file.info.name,
                "type": file.info.media_type, "size": file.info.size,
                "sha256": profile::hex(&file.info.sha256),
            }),
            None => json!({
                "event": "message", "from": m.from, "seq": m.seq.0, "id": m.id.to_string(),
                "sent_at_ms": m.sent_at_ms, "text": m.text(),
            }),
        },
        Event::Receipt(r) => json!({
            "event": "receipt", "kind": receipt_kind(r.kind), "peer": r.peer, "seq": r.seq.0,
            "id": r.id.to_string(),
        }),
        Event::Undecryptable { from, seq, reason } => {
            json!({ "event": "undecryptable", "from": from, "seq": seq.0, "reason": reason })
        }
        Event::ServerError { code, message } => {
            json!({ "event": "error", "code": code.to_u32(), "name": format!("{code:?}"), "message": message })
        }
        Event::Connection(state) => {
            json!({ "event": "connection", "state": format!("{state:?}") })
        }
        Event::Disconnected { reason } => json!({ "event": "disconnected", "reason": reason }),
        Event::GroupMessage(m) => match &m.file {
            Some(file) => json!({
                "event": "group_file", "group": m.group, "from": m.from, "seq": m.seq.0,
                "id": m.seq.0, "sent_at_ms": m.sent_at_ms, "name": file.info.name,
                "type": file.info.media_type, "size": file.info.size,
                "sha256": profile::hex(&file.info.sha256),
            }),
            None => json!({
                "event": "group_message", "group": m.group, "from": m.from, "seq": m.seq.0,
                "id": m.id.to_string(), "sent_at_ms": m.sent_at_ms, "text": m.text(),
            }),
        },
        Event::GroupChange {
            group,
            seq,
            by,
            change,
        } => json!({
            "event": "group_change", "group": group, "seq": seq.0, "by": by, "change": change,
        }),
        Event::GroupUndecryptable {
            group,
            from,
            seq,
            reason,
        } => json!({
            "event": "group_undecryptable", "group": group, "from": from, "seq": seq.0,
            "reason": reason,
        }),
        Event::Typing { from, group } => json!({ "event": "typing", "from": from, "group": group }),
        Event::Presence {
            user,
            state,
            last_seen_ms,
        } => json!({
            "event": "presence", "user": user, "state": state.name(),
            "last_seen_ms": last_seen_ms,
        }),
    }
}

async fn listen(
    client: &Client,
    mut events: Events,
    count: Option<usize>,
    read: bool,
    profile: &mut Profile,
) -> anyhow::Result<()> {
    let mut shown = 0;
    while count.is_none_or(|n| shown < n) {
        let Some(event) = events.recv().await else {
            break;
        };
        if let Event::Connection(state) = &event {
            // State changes are for people; scripts get messages and receipts only.
            eprintln!("connection: {state:?}");
            continue;
        }
        say_json(&event_json(&event))?;
        match &event {
            Event::Message(m) => {
                if let Some(file) = &m.file {
                    // `get-file <seq>` finds it here.
                    let files = &mut profile.files;
                    files.insert(m.seq.0, profile::SavedFile::from(file));
                }
                if read {
                    client.mark_read(m.seq)?;
                }
                shown += 1;
            }
            Event::GroupMessage(m) => {
                if let Some(file) = &m.file {
                    // `get-file --group <group> <seq>` finds it here.
                    let files = profile.group_files.entry(m.group.to_string()).or_default();
                    files.insert(m.seq.0, profile::SavedFile::from(file));
                }
                shown += 1;
            }
            Event::Receipt(_)
            | Event::Undecryptable { .. }
            | Event::GroupChange { .. }
            | Event::GroupUndecryptable { .. } => shown += 1,
            Event::Disconnected { reason } => bail!("disconnected: {reason}"),
            Event::ServerError { .. }
            | Event::Connection(_)
            | Event::Typing { .. }
            | Event::Presence { .. } => {}
        }
    }
    Ok(())
}

/// Whom `chat` talks to.
enum Target {
    Friend(UserId),
    Group(GroupId),
}

async fn chat(client: &Client, mut events: Events, target: &Target) -> anyhow::Result<()> {
    let name = match target {
        Target::Friend(user) => user.to_string(),
        Target::Group(group) => group.to_string(),
    };
    eprintln!(
        "chatting with {name} as {} — type a line to send, /quit to leave",
        client.user()
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                match line.trim() {
                    "" => {}
                    "/quit" => return Ok(()),
                    text => {
                        let sent = match target {
                            Target::Friend(user) => client.send(user, text.as_bytes()).await?,
                            Target::Group(group) => client.send_group(group, text.as_bytes()).await?,
                        };
                        say(&format!("  sent #{}", sent.seq))?;
                    }
                }
            }
            event = events.recv() => match event {
                Some(Event::Message(m)) => {
                    match &m.file {
                        Some(f) => say(&format!("[{}] sent a file: {} ({} bytes) — `quiver get-file {} <path>` after `quiver listen`", m.from, f.info.safe_name(), f.info.size, m.seq))?,
                        None => say(&format!("[{}] {}", m.from, terminal_safe(&m.text())))?,
                    }
                    if matches!(target, Target::Friend(with) if *with == m.from) {
                        client.mark_read(m.seq)?;
                    }
                }
                Some(Event::Receipt(r)) => say(&format!("  {} #{} {}", r.peer, r.seq, receipt_kind(r.kind)))?,
                Some(Event::Undecryptable { from, reason, .. }) => say(&format!("[{from}] <unreadable: {}>", terminal_safe(&reason)))?,
                Some(Event::ServerError { code, message }) => eprintln!("node error {code}: {}", terminal_safe(&message)),
                Some(Event::Connection(state)) => eprintln!("connection: {state:?}"),
                Some(Event::GroupMessage(m)) => {
                    say(&format!("[{} in {}] {}", m.from, m.group, terminal_safe(&m.text())))?;
                    if matches!(target, Target::Group(g) if *g == m.group) {
                        client.mark_group_read(&m.group, m.seq)?;
                    }
                }
                Some(Event::GroupChange { group, by, change, .. }) => say(&format!("[{group}] {by}: {}", terminal_safe(&format!("{change:?}"))))?,
                Some(Event::GroupUndecryptable { group, from, reason, .. }) => say(&format!("[{from} in {group}] <unreadable: {}>", terminal_safe(&reason)))?,
                Some(Event::Typing { from, group: None }) => eprintln!("{from} is typing…"),
                Some(Event::Typing { from, group: Some(group) }) => eprintln!("{from} is typing in {group}…"),
                Some(Event::Presence { user, state, .. }) => eprintln!("{user} is {}", state.name()),
                Some(Event::Disconnected { reason }) => bail!("disconnected: {reason}"),
                None => return Ok(()),
            }
        }
    }
}
