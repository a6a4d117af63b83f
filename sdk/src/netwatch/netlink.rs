//! Network changes on Linux and Android: one route-netlink socket that the kernel writes
//! to when a link goes up or down, an address comes or goes, or a route changes. We do not
//! parse the messages; [`super::follow`] asks the routing table what they meant.

use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr};

// Multicast groups of route netlink (linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// The kernel's change notifications.
pub(super) struct Watcher {
    socket: netlink_sys::TokioSocket,
    buf: Vec<u8>,
}

impl Watcher {
    pub(super) fn new() -> std::io::Result<Self> {
        let mut socket = netlink_sys::TokioSocket::new(NETLINK_ROUTE)?;
        let groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV6_ROUTE;
        socket.socket_mut().bind(&SocketAddr::new(0, groups))?;
        Ok(Self {
            socket,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Waits for the next change notification.
    pub(super) async fn changed(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        match self.socket.recv_from(&mut self.buf).await {
            Ok(_) => Ok(()),
            // The kernel dropped notifications because we were slow: something changed.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
