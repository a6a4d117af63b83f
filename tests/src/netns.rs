//! Real network namespaces for mobility tests: a "phone" namespace with two links to the
//! test's own namespace, `wifi` and `cell`, and a server address that both reach, as a
//! phone reaches a node over either radio. Everything is removed on drop. Needs root
//! (`ip netns`), as CI has.

use anyhow::{bail, Context};
use std::net::Ipv4Addr;
use std::process::Command;

/// A phone namespace and its two links.
pub struct Phone {
    /// The namespace's name, for `ip netns exec`.
    pub ns: String,
    /// Our end of the `wifi` link.
    pub wifi_host: String,
    /// Our end of the `cell` link.
    pub cell_host: String,
    /// The server address (with its prefix) on our loopback.
    server: String,
    net: u8,
}

impl Phone {
    /// Makes the namespace: `wifi` 10.N.1.2/24 (default route, metric 100) and `cell`
    /// 10.N.2.2/24 (default route, metric 200); the server address 10.N.0.1 sits on our
    /// loopback (containers often lack the dummy link type), reachable over either.
    pub fn new() -> anyhow::Result<Self> {
        if !is_root() {
            bail!("network namespace tests need root (CI runs as root)");
        }
        // Unique per process and per phone: tests run side by side.
        static PHONES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PHONES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 8;
        let pid = std::process::id();
        let id = format!("{pid}{n}");
        let net = 20 + ((pid % 25) * 8 + n) as u8;
        let phone = Phone {
            ns: format!("qvphone{id}"),
            wifi_host: format!("qvw{id}"),
            cell_host: format!("qvc{id}"),
            server: format!("10.{net}.0.1/32"),
            net,
        };
        phone.remove();
        let (ns, n) = (phone.ns.as_str(), net);
        ip(&["netns", "add", ns])?;
        for (host, inside, subnet) in [(&phone.wifi_host, "wifi", 1), (&phone.cell_host, "cell", 2)]
        {
            ip(&[
                "link", "add", host, "type", "veth", "peer", "name", inside, "netns", ns,
            ])?;
            ip(&["addr", "add", &format!("10.{n}.{subnet}.1/24"), "dev", host])?;
            ip(&["link", "set", host, "up"])?;
            ip_in(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("10.{n}.{subnet}.2/24"),
                    "dev",
                    inside,
                ],
            )?;
            ip_in(ns, &["link", "set", inside, "up"])?;
        }
        ip_in(ns, &["link", "set", "lo", "up"])?;
        phone.default_route("wifi")?;
        phone.default_route("cell")?;
        ip(&["addr", "add", &phone.server, "dev", "lo"])?;
        Ok(phone)
    }

    /// The address the phone reaches the node at.
    pub fn server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, 1)
    }

    /// The phone's own address on `link` (`wifi` or `cell`).
    pub fn phone_ip(&self, link: &str) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, if link == "wifi" { 1 } else { 2 }, 2)
    }

    /// Takes the phone's `link` down, as when it leaves the Wi-Fi: its routes go with it.
    pub fn link_down(&self, link: &str) -> anyhow::Result<()> {
        ip_in(&self.ns, &["link", "set", link, "down"])
    }

    /// Brings the phone's `link` back with its default route, as DHCP would.
    pub fn link_up(&self, link: &str) -> anyhow::Result<()> {
        ip_in(&self.ns, &["link", "set", link, "up"])?;
        self.default_route(link)
    }

    /// Drops every UDP packet in and out of the phone (nftables), as a network that
    /// blocks UDP does; TCP still passes.
    pub fn block_udp(&self) -> anyhow::Result<()> {
        self.block_udp_on(None)
    }

    /// Drops UDP in and out of the phone on `link` only (`None`: on every link): a
    /// network of its own that blocks UDP, a hotel's Wi-Fi or a corporate one.
    pub fn block_udp_on(&self, link: Option<&str>) -> anyhow::Result<()> {
        let nft = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &self.ns, "nft"])
                .args(args))
        };
        nft(&["add", "table", "inet", "qvblock"])?;
        for (chain, hook, dir) in [("in", "input", "iifname"), ("out", "output", "oifname")] {
            let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
            nft(&["add", "chain", "inet", "qvblock", chain, &spec])?;
            let mut rule = vec!["add", "rule", "inet", "qvblock", chain];
            if let Some(link) = link {
                rule.extend([dir, link]);
            }
            rule.extend(["meta", "l4proto", "udp", "drop"]);
            nft(&rule)?;
        }
        Ok(())
    }

    /// Lets UDP through again.
    pub fn unblock_udp(&self) -> anyhow::Result<()> {
        run(Command::new("ip").args([
            "netns", "exec", &self.ns, "nft", "delete", "table", "inet", "qvblock",
        ]))
    }

    /// Packets our end of a link sent so far (towards the phone).
    pub fn sent_on(&self, host_link: &str) -> anyhow::Result<u64> {
        let path = format!("/sys/class/net/{host_link}/statistics/tx_packets");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| path.clone())?
            .trim()
            .parse()?)
    }

    fn default_route(&self, link: &str) -> anyhow::Result<()> {
        let (via, metric) = match link {
            "wifi" => (format!("10.{}.1.1", self.net), "100"),
            _ => (format!("10.{}.2.1", self.net), "200"),
        };
        ip_in(
            &self.ns,
            &[
                "route", "add", "default", "via", &via, "dev", link, "metric", metric,
            ],
        )
    }

    fn remove(&self) {
        // Deleting the namespace deletes the veth pairs with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["addr", "del", &self.server, "dev", "lo"])
            .output();
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.remove();
    }
}

fn is_root() -> bool {
    // The effective uid, the third field of `Uid:`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `ip args` here.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// Runs `ip args` in namespace `ns`.
fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
