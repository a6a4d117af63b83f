//! [`Attached`]: which other nodes hold sessions of which users attached to this node for
//! its groups ([`quiver_proto::mesh::MeshOpen::GroupAttach`]). A group's home pushes its
//! log down those attachments; what is not in the log — typing — goes to the same nodes
//! as one forward per node, found here without a Redis lookup per member, so it reaches
//! every member of a group of any size wherever they are connected.
//!
//! In memory only, and exactly as large as the attachments open now (each bounded by the
//! mesh link's stream limit): an attachment counts itself in while it is served and out
//! when it ends ([`Attached::hold`]).

use quiver_proto::UserId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Attachments open now, by user and attaching node.
#[derive(Default)]
pub struct Attached {
    /// For each user, each node with attachments of theirs here, and how many.
    by_user: Mutex<HashMap<UserId, HashMap<String, u32>>>,
}

impl Attached {
    /// Counts an attachment of `user`'s from `node` until the returned hold is dropped.
    pub fn hold(self: &Arc<Self>, user: UserId, node: String) -> Hold {
        *self
            .lock()
            .entry(user.clone())
            .or_default()
            .entry(node.clone())
            .or_default() += 1;
        Hold {
            attached: self.clone(),
            user,
            node,
        }
    }

    /// The nodes that hold attachments of any of `users`, each with those users.
    pub fn nodes_of<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> BTreeMap<String, Vec<UserId>> {
        let by_user = self.lock();
        let mut by_node: BTreeMap<String, Vec<UserId>> = BTreeMap::new();
        for user in users {
            for node in by_user.get(user).into_iter().flat_map(HashMap::keys) {
                by_node.entry(node.clone()).or_default().push(user.clone());
            }
        }
        by_node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, HashMap<String, u32>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One attachment counted in [`Attached`]; counted out when dropped.
pub struct Hold {
    attached: Arc<Attached>,
    user: UserId,
    node: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut by_user = self.attached.lock();
        let Some(nodes) = by_user.get_mut(&self.user) else {
            return;
        };
        if let Some(count) = nodes.get_mut(&self.node) {
            *count -= 1;
            if *count == 0 {
                nodes.remove(&self.node);
            }
        }
        if nodes.is_empty() {
            by_user.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("user id")
    }

    #[test]
    fn an_attachment_counts_until_its_hold_is_dropped() {
        let attached = Arc::new(Attached::default());
        let (alice, bob) = (user("alice"), user("bob"));
        let first = attached.hold(alice.clone(), "n2".into());
        let second = attached.hold(alice.clone(), "n2".into());
        let other = attached.hold(bob.clone(), "n3".into());
        let nodes = attached.nodes_of([&alice, &bob]);
        assert_eq!(nodes.get("n2"), Some(&vec![alice.clone()]));
        assert_eq!(nodes.get("n3"), Some(&vec![bob.clone()]));
        drop(first);
        assert_eq!(
            attached.nodes_of([&alice]).len(),
            1,
            "one of two is still open"
        );
        drop((second, other));
        assert!(attached.nodes_of([&alice, &bob]).is_empty());
        assert!(attached.lock().is_empty(), "nothing is kept for users gone");
    }
}
