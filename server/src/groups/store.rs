//! [`Groups`]: every group homed on this node — their state (sled, and in memory), their
//! logs (an [`Inbox`] of their own, each group an owner named by its id) and the
//! members' receipt markers.
//!
//! A group's lock is held while a change or a chat is checked and appended, so a chat
//! from a member who is being removed lands before the removal entry or is refused, and
//! none lands after it sealed with the old key. The state is saved (and flushed) before
//! the caller is answered; the entry is durable before it is pushed.

use super::news::GroupNews;
use super::state::{GroupKey, GroupState, Refusal};
use crate::inbox::{Appended, Inbox, InboxError};
use crate::rate::KeyedLimiter;
use crate::GroupLimits;
use quiver_proto::files::FileRef;
use quiver_proto::{
    ClientMsgId, DeviceId, EntryKind, ErrorCode, GroupChange, GroupId, Seq, UserId,
};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

/// Users tracked by the creation limiter before it forgets them all.
const LIMITER_KEYS: usize = 100_000;

/// The groups homed here.
pub struct Groups {
    db: sled::Db,
    /// Group id → postcard of its [`GroupState`].
    tree: sled::Tree,
    /// `group/user` → delivered-up-to and read-up-to, 8 bytes each.
    marks: sled::Tree,
    log: Arc<Inbox>,
    states: Mutex<HashMap<GroupId, Arc<Mutex<GroupState>>>>,
    /// The groups each user is in or was removed from (their devices get entries up to
    /// the removal), and the invitations waiting for them.
    by_user: Mutex<HashMap<UserId, UserGroups>>,
    limits: GroupLimits,
    created: KeyedLimiter<UserId>,
    /// Users whose groups changed: their sessions start or end feeds.
    changed: broadcast::Sender<UserId>,
    rng: SystemRandom,
    /// Large groups with chats their members have not been notified of yet.
    news: GroupNews,
}

#[derive(Default)]
struct UserGroups {
    /// Groups they are in, or were in until a removal or a leave.
    groups: BTreeSet<GroupId>,
    /// Those of `groups` they are no longer in: what is left are their memberships,
    /// counted without visiting every group (a user may be in thousands).
    gone: BTreeSet<GroupId>,
    invitations: BTreeSet<GroupId>,
}

impl UserGroups {
    /// Records whether they are a member of `group` now.
    fn set(&mut self, group: &GroupId, member: bool) {
        self.groups.insert(group.clone());
        if member {
            self.gone.remove(group);
        } else {
            self.gone.insert(group.clone());
        }
    }
}

/// A user's groups and invitations homed on the other nodes of a mesh, counted against
/// the per-user limits with those homed here (zero on a single node).
#[derive(Clone, Copy, Debug, Default)]
pub struct Elsewhere {
    /// Groups they are a member of.
    pub groups: usize,
    /// Invitations waiting for them.
    pub invitations: usize,
}

/// What a member sees of a group.
#[derive(Clone, Debug)]
pub struct GroupView {
    /// The group.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The key epoch to seal at now.
    pub epoch: u32,
    /// Members and roles.
    pub members: Vec<(UserId, quiver_proto::Role)>,
    /// The keys this member holds, by epoch.
    pub keys: Vec<(u32, GroupKey)>,
}

/// How far the members are with one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipts {
    /// Members now.
    pub members: usize,
    /// Members with a device that has it.
    pub delivered: usize,
    /// Members who read it.
    pub read: usize,
    /// For groups of up to 32 members: who has it and who read it.
    pub by_member: Option<Vec<(UserId, bool, bool)>>,
}

/// The log's owner name for a group: a group id is a valid user name.
pub fn owner(group: &GroupId) -> UserId {
    UserId::parse(group.as_str()).expect("a group id is a valid log owner")
}

fn storage(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "group storage failed");
    (ErrorCode::Unavailable, "group storage failed")
}

fn mark_key(group: &GroupId, user: &UserId) -> Vec<u8> {
    format!("{group}/{user}").into_bytes()
}

impl Groups {
    /// Loads the groups in `db`, with their logs in `log`.
    pub fn open(db: &sled::Db, log: Arc<Inbox>, limits: GroupLimits) -> Result<Self, InboxError> {
        let tree = db.open_tree("groups")?;
        let mut states = HashMap::new();
        let mut by_user: HashMap<UserId, UserGroups> = HashMap::new();
        for item in tree.iter() {
            let (key, value) = item?;
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| GroupId::parse(k).ok())
                .ok_or_else(|| InboxError::Corrupt("group key".into()))?;
            let state: GroupState = postcard::from_bytes(&value)
                .map_err(|e| InboxError::Corrupt(format!("group {id}: {e}")))?;
            for user in state.members.keys().chain(state.gone.keys()) {
                let theirs = by_user.entry(user.clone()).or_default();
                theirs.set(&id, state.members.contains_key(user));
            }
            for user in state.invited.keys() {
                let theirs = by_user.entry(user.clone()).or_default();
                theirs.invitations.insert(id.clone());
            }
            states.insert(id, Arc::new(Mutex::new(state)));
        }
        Ok(Self {
            db: db.clone(),
            tree,
            marks: db.open_tree("group_marks")?,
            log,
            states: Mutex::new(states),
            by_user: Mutex::new(by_user),
            created: KeyedLimiter::per_hour(limits.creations_per_hour, LIMITER_KEYS),
            limits,
            changed: broadcast::channel(1024).0,
            rng: SystemRandom::new(),
            news: GroupNews::default(),
        })
    }

    /// The group logs.
    pub fn log(&self) -> &Arc<Inbox> {
        &self.log
    }

    /// Large groups' chats waiting to be notified ([`crate::group_push`]).
    pub fn news(&self) -> &GroupNews {
        &self.news
    }

    /// Tells of users whose groups changed.
    pub fn changes(&self) -> broadcast::Receiver<UserId> {
        self.changed.subscribe()
    }

    fn key(&self) -> Result<GroupKey, Refusal> {
        let mut key = [0u8; 32];
        self.rng
            .fill(&mut key)
            .map_err(|_| storage("no randomness"))?;
        Ok(key)
    }

    fn state(&self, group: &GroupId) -> Result<Arc<Mutex<GroupState>>, Refusal> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        // A group that does not exist and one you are not in are told apart by nobody.
        states
            .get(group)
            .cloned()
            .ok_or((ErrorCode::NotMember, "not a member of this group"))
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, UserGroups>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, group: &GroupId, state: &GroupState) -> Result<(), Refusal> {
        let bytes = postcard::to_stdvec(state).map_err(storage)?;
        self.tree.insert(group.as_str(), bytes).map_err(storage)?;
        Ok(())
    }

    /// Waits for `appended` to be durable and the state saved, then tells `users`.
    async fn settle(&self, appended: Appended, users: &[UserId]) -> Result<Seq, Refusal> {
        let seq = appended.durable().await.map_err(storage)?;
        crate::sled_flush::flush(&self.db).await.map_err(storage)?;
        for user in users {
            let _ = self.changed.send(user.clone());
        }
        Ok(seq)
    }

    /// A fresh group id, for [`Groups::create`].
    pub fn new_id(&self) -> Result<GroupId, Refusal> {
        let mut bits = [0u8; 8];
        self.rng
            .fill(&mut bits)
            .map_err(|_| storage("no randomness"))?;
        Ok(GroupId::from_bits(u64::from_be_bytes(bits)))
    }

    /// Tells `user`'s sessions here to look for groups to feed again (a node of the mesh
    /// homes a group of theirs now).
    pub fn touch(&self, user: &UserId) {
        let _ = self.changed.send(user.clone());
    }

    /// `owner` makes a group named `name`, with the id `id` (from [`Groups::new_id`]).
    pub async fn create(
        &self,
        id: GroupId,
        owner: &UserId,
        name: String,
        elsewhere: Elsewhere,
    ) -> Result<(), Refusal> {
        self.room_to_make(owner, elsewhere)?;
        if !self.created.try_take(owner.clone(), Instant::now()) {
            return Err((ErrorCode::RateLimited, "too many groups made this hour"));
        }
        if self.state(&id).is_ok() {
            return Err((ErrorCode::Internal, "that group id is taken"));
        }
        let state = GroupState::new(name.clone(), owner, self.key()?);
        let appended = {
            let change = EntryKind::Member(GroupChange::Created { name });
            let appended = self.log.append(&self::owner(&id), owner, change);
            appended.map_err(storage)?
        };
        self.save(&id, &state)?;
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Arc::new(Mutex::new(state)));
        self.users()
            .entry(owner.clone())
            .or_default()
            .set(&id, true);
        self.settle(appended, std::slice::from_ref(owner)).await?;
        Ok(())
    }

    /// Runs `decide` on the group's state; appends the change it returns, made by
    /// `actor`, and records it. Returns the entry's `seq`.
    async fn change(
        &self,
        group: &GroupId,
        actor: &UserId,
        decide: impl FnOnce(&mut GroupState) -> Result<GroupChange, Refusal>,
    ) -> Result<Seq, Refusal> {
        let state = self.state(group)?;
        let key = self.key()?;
        let (appended, touched) = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let change = decide(&mut state)?;
            let touched = match &change {
                GroupChange::Added { user, .. }
                | GroupChange::Removed { user, .. }
                | GroupChange::RoleChanged { user, .. } => Some(user.clone()),
                GroupChange::Left { .. } => Some(actor.clone()),
                GroupChange::Created { .. } | GroupChange::Renamed { .. } => None,
            };
            let kind = EntryKind::Member(change.clone());
            let appended = self
                .log
                .append(&owner(group), actor, kind)
                .map_err(storage)?;
            state.applied(actor, &change, appended.seq, key);
            self.save(group, &state)?;
            // Recorded under the group's lock, so two changes cannot record in turn
            // what they found in the other order.
            if let Some(user) = &touched {
                let mut users = self.users();
                let theirs = users.entry(user.clone()).or_default();
                theirs.set(group, state.members.contains_key(user));
                theirs.invitations.remove(group);
            }
            (appended, touched)
        };
        let touched: Vec<UserId> = touched.into_iter().collect();
        self.settle(appended, &touched).await
    }

    /// Whether `owner` may make a group, with `elsewhere` held on other nodes.
    pub fn room_to_make(&self, owner: &UserId, elsewhere: Elsewhere) -> Result<(), Refusal> {
        match self.full(owner, elsewhere) {
            true => Err((ErrorCode::QuotaExceeded, "you are in too many groups")),
            false => Ok(()),
        }
    }

    fn room_for(&self, user: &UserId, elsewhere: Elsewhere) -> Result<(), Refusal> {
        match self.full(user, elsewhere) {
            true => Err((ErrorCode::QuotaExceeded, "that user is in too many groups")),
            false => Ok(()),
        }
    }

    /// Whether `user` is in as many groups as they may be, here and `elsewhere`.
    fn full(&self, user: &UserId, elsewhere: Elsewhere) -> bool {
        self.memberships(user) + elsewhere.groups >= self.limits.max_groups_per_user as usize
    }

    /// The groups `user` is a member of now (not those they were removed from or left,
    /// which their devices still get up to the change).
    fn memberships(&self, user: &UserId) -> usize {
        self.users()
            .get(user)
            .map_or(0, |g| g.groups.len() - g.gone.len())
    }

    /// `actor` adds `user`: at once if `friends` (the two are friends), else as an
    /// invitation `user` accepts. Returns the entry's `seq`, or `None` for an invitation.
    pub async fn add(
        &self,
        group: &GroupId,
        actor: &UserId,
        user: &UserId,
        friends: bool,
        elsewhere: Elsewhere,
    ) -> Result<Option<Seq>, Refusal> {
        self.room_for(user, elsewhere)?;
        let max = self.limits.max_members as usize;
        if friends {
            let seq = self
                .change(group, actor, |s| s.add(actor, user, max))
                .await?;
            return Ok(Some(seq));
        }
        {
            let users = self.users();
            let waiting = users.get(user).map_or(0, |g| g.invitations.len());
            if waiting + elsewhere.invitations >= self.limits.max_invitations_per_user as usize {
                return Err((
                    ErrorCode::QuotaExceeded,
                    "too many invitations wait for them",
                ));
            }
        }
        let state = self.state(group)?;
        {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.invite(actor, user, max)?;
            self.save(group, &state)?;
        }
        self.users()
            .entry(user.clone())
            .or_default()
            .invitations
            .insert(group.clone());
        crate::sled_flush::flush(&self.db).await.map_err(storage)?;
        Ok(None)
    }

    /// `user` accepts their invitation to `group`.
    pub async fn accept(
        &self,
        group: &GroupId,
        user: &UserId,
        elsewhere: Elsewhere,
    ) -> Result<Seq, Refusal> {
        self.room_for(user, elsewhere)?;
        let max = self.limits.max_members as usize;
        self.change(group, user, |s| s.accept(user, max)).await
    }

    /// `actor` removes `user`.
    pub async fn remove(
        &self,
        group: &GroupId,
        actor: &UserId,
        user: &UserId,
    ) -> Result<Seq, Refusal> {
        self.change(group, actor, |s| s.remove(actor, user)).await
    }

    /// `user` leaves.
    pub async fn leave(&self, group: &GroupId, user: &UserId) -> Result<Seq, Refusal> {
        self.change(group, user, |s| s.leave(user)).await
    }

    /// `actor` renames the group.
    pub async fn rename(
        &self,
        group: &GroupId,
        actor: &UserId,
        name: String,
    ) -> Result<Seq, Refusal> {
        self.change(group, actor, |s| s.rename(actor, name)).await
    }

    /// `actor` gives `user` `role`.
    pub async fn set_role(
        &self,
        group: &GroupId,
        actor: &UserId,
        user: &UserId,
        role: quiver_proto::Role,
    ) -> Result<Seq, Refusal> {
        self.change(group, actor, |s| s.set_role(actor, user, role))
            .await
    }

    /// What `user`, a member, sees of `group`.
    pub fn view(&self, group: &GroupId, user: &UserId) -> Result<GroupView, Refusal> {
        let state = self.state(group)?;
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        if state.role(user).is_none() {
            return Err((ErrorCode::NotMember, "not a member of this group"));
        }
        Ok(GroupView {
            id: group.clone(),
            name: state.name.clone(),
            epoch: state.epoch,
            members: state
                .members
                .iter()
                .map(|(u, m)| (u.clone(), m.role))
                .collect(),
            keys: state.keys_for(user),
        })
    }

    /// The groups `user` is in, and those inviting them (with their names).
    pub fn list(&self, user: &UserId) -> (Vec<GroupView>, Vec<(GroupId, String)>) {
        let (groups, invitations) = match self.users().get(user) {
            Some(g) => (g.groups.clone(), g.invitations.clone()),
            None => Default::default(),
        };
        let views = groups
            .iter()
            .filter_map(|g| self.view(g, user).ok())
            .collect();
        let names = invitations
            .into_iter()
            .filter_map(|g| {
                let state = self.state(&g).ok()?;
                let name = state.lock().unwrap_or_else(|p| p.into_inner()).name.clone();
                Some((g, name))
            })
            .collect();
        (views, names)
    }

    /// The groups whose entries `user`'s devices get (or got, up to a removal).
    pub fn feeds_of(&self, user: &UserId) -> Vec<GroupId> {
        self.users()
            .get(user)
            .map(|g| g.groups.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Which entries of `group` `user`'s devices get: from, and up to (once gone).
    pub fn range(&self, group: &GroupId, user: &UserId) -> Option<(Seq, Option<Seq>)> {
        let state = self.state(group).ok()?;
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.range(user)
    }

    /// Appends a chat from `from`, a member, sealed at `epoch`; with `file`, a file
    /// message (whose blob the caller has checked and kept).
    #[allow(clippy::too_many_arguments)]
    pub fn chat(
        &self,
        group: &GroupId,
        from: &UserId,
        id: ClientMsgId,
        sent_at_ms: u64,
        epoch: u32,
        body: Vec<u8>,
        file: Option<FileRef>,
    ) -> Result<Appended, ErrorCode> {
        let state = self.state(group).map_err(|(code, _)| code)?;
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.may_send(from, epoch).map_err(|(code, _)| code)?;
        let kind = match file {
            None => EntryKind::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
            },
            Some(file) => EntryKind::GroupFile {
                id,
                sent_at_ms,
                epoch,
                body,
                file,
            },
        };
        self.log
            .append(&owner(group), from, kind)
            .map_err(|e| match e {
                InboxError::Full => ErrorCode::QuotaExceeded,
                e => storage(e).0,
            })
    }

    /// The members of `group` but `except`, if it has at most `max` members (`None` if it
    /// has more): whom a chat of `except`'s there notifies. Empty for no such group.
    pub fn to_notify(&self, group: &GroupId, except: &UserId, max: usize) -> Option<Vec<UserId>> {
        let Ok(state) = self.state(group) else {
            return Some(Vec::new());
        };
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        if state.members.len() > max {
            return None;
        }
        let members = state.members.keys().filter(|member| *member != except);
        Some(members.cloned().collect())
    }

    /// Entries of `group`'s log that `device` has not acknowledged.
    pub fn unread(&self, group: &GroupId, device: DeviceId) -> u64 {
        let owner = owner(group);
        let cursor = self.log.cursor(&owner, device).unwrap_or(Seq(0));
        self.log.head(&owner).0.saturating_sub(cursor.0)
    }

    /// Entries of `group` up to `seq` that none of `user`'s devices has had.
    pub fn unread_of(&self, group: &GroupId, user: &UserId, seq: Seq) -> u64 {
        seq.0.saturating_sub(self.marks_of(group, user).0 .0)
    }

    /// A device of `user` has `group`'s log up to `seq`.
    pub fn delivered(&self, group: &GroupId, user: &UserId, seq: Seq) {
        self.mark(group, user, 0, seq);
    }

    /// `user` read `group`'s log up to `seq`.
    pub fn read(&self, group: &GroupId, user: &UserId, seq: Seq) {
        self.mark(group, user, 8, seq);
    }

    fn mark(&self, group: &GroupId, user: &UserId, at: usize, seq: Seq) {
        let updated = self.marks.fetch_and_update(mark_key(group, user), |old| {
            let mut marks = [0u8; 16];
            if let Some(old) = old.filter(|o| o.len() == 16) {
                marks.copy_from_slice(old);
            }
            let was = u64::from_be_bytes(marks[at..at + 8].try_into().unwrap_or_default());
            marks[at..at + 8].copy_from_slice(&was.max(seq.0).to_be_bytes());
            Some(marks.to_vec())
        });
        if let Err(e) = updated {
            tracing::warn!(error = %e, "group receipt marker not saved");
        }
    }

    fn marks_of(&self, group: &GroupId, user: &UserId) -> (Seq, Seq) {
        let Ok(Some(bytes)) = self.marks.get(mark_key(group, user)) else {
            return (Seq(0), Seq(0));
        };
        let at = |i: usize| {
            Seq(bytes
                .get(i..i + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes))
        };
        (at(0), at(8))
    }

    /// How far the members are with entry `seq`, asked by `asker`, a member.
    pub fn receipts(&self, group: &GroupId, asker: &UserId, seq: Seq) -> Result<Receipts, Refusal> {
        let members: Vec<UserId> = {
            let state = self.state(group)?;
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            if state.role(asker).is_none() {
                return Err((ErrorCode::NotMember, "not a member of this group"));
            }
            state.members.keys().cloned().collect()
        };
        let mut receipts = Receipts {
            members: members.len(),
            ..Receipts::default()
        };
        let mut each = Vec::new();
        for member in members {
            let (delivered, read) = self.marks_of(group, &member);
            let (has, seen) = (delivered >= seq, read >= seq);
            receipts.delivered += usize::from(has);
            receipts.read += usize::from(seen);
            each.push((member, has, seen));
        }
        receipts.by_member = (each.len() <= 32).then_some(each);
        Ok(receipts)
    }
}
