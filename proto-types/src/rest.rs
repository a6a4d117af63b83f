//! JSON bodies of the REST API (accounts, login, friends), shared by node and SDK so the
//! two cannot drift apart. Paths are constants here too.

use crate::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// `POST` — create an account.
pub const REGISTER: &str = "/v1/register";
/// `POST` — log in, get a token.
pub const LOGIN: &str = "/v1/login";
/// `POST` — ask someone to be friends (accepts if they already asked you).
pub const FRIEND_REQUESTS: &str = "/v1/friends/requests";
/// `POST` — accept a friend request.
pub const FRIEND_ACCEPT: &str = "/v1/friends/accept";
/// `POST` — end a friendship (or withdraw or refuse a request). Making friends again later
/// makes a new key.
pub const FRIEND_REMOVE: &str = "/v1/friends/remove";
/// `POST` — block a user: ends the friendship and any request between you, and their
/// requests to you are dropped unseen from now on.
pub const FRIEND_BLOCK: &str = "/v1/friends/block";
/// `POST` — lift a block.
pub const FRIEND_UNBLOCK: &str = "/v1/friends/unblock";
/// `GET` — friends (with keys), pending requests and blocked users.
pub const FRIENDS: &str = "/v1/friends";
/// `POST` — log out this device, or every device: their tokens stop working.
pub const LOGOUT: &str = "/v1/logout";
/// `GET` — Prometheus text metrics (restrict it to operators at the proxy or firewall).
pub const METRICS: &str = "/metrics";
/// `POST`: registers the caller's device for push notifications ([`PushTarget`]);
/// `DELETE`: removes it. Logging out removes it too.
pub const PUSH: &str = "/v1/push";
/// `GET`: the groups whose push notifications the caller muted ([`MutedGroups`]).
pub const PUSH_MUTED: &str = "/v1/push/muted";
/// `PUT`: mutes the group's push notifications for every device of the caller; `DELETE`:
/// unmutes them. Both answer [`MutedGroups`]. Chats still arrive; only the
/// notifications to away devices stop.
pub const PUSH_MUTED_GROUP: &str = "/v1/push/muted/{group}";
/// `GET` — readiness: 200 when the node can take new sessions (in a mesh: it is
/// registered, so Redis answers), 503 otherwise.
pub const READY: &str = "/v1/ready";
/// `GET` — liveness.
pub const HEALTH: &str = "/v1/health";

/// Body of [`REGISTER`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The user name (see [`UserId::parse`]).
    pub user: String,
    /// At least 8 characters.
    pub password: String,
}

/// Body of [`LOGIN`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// This install's device id from an earlier login; a new one is made when absent.
    #[serde(default)]
    pub device: Option<DeviceId>,
}

/// Answer to [`LOGIN`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    /// Bearer token for REST and for the QUIC `Hello`.
    pub token: String,
    /// Who logged in.
    pub user: UserId,
    /// This device's id: keep it and send it at the next login.
    pub device: DeviceId,
    /// When the token stops working, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The QUIC address (`host:port`) of the user's home node.
    pub quic_addr: String,
}

/// Body of [`PUSH`]: where the push gateway reaches this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTarget {
    /// `"apns"`, `"fcm"` or `"webhook"`.
    pub kind: String,
    /// The platform's token for the device (the gateway's "pushkey"), at most 4096 bytes.
    pub token: String,
    /// The app's id at the gateway (which credentials it uses), at most 256 bytes.
    pub app_id: String,
}

/// Body of [`LOGOUT`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogoutRequest {
    /// Log out every device of the user, not only the caller's.
    #[serde(default)]
    pub all_devices: bool,
}

/// Body of [`FRIEND_REQUESTS`] and [`FRIEND_ACCEPT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FriendRequest {
    /// The other user.
    pub user: String,
}

/// Answer to [`FRIEND_REQUESTS`] and [`FRIEND_ACCEPT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FriendStatus {
    /// The other user.
    pub user: UserId,
    /// `"pending"` or `"friends"`.
    pub status: String,
    /// The friendship key (64 hex digits) once the two are friends.
    #[serde(default)]
    pub key: Option<String>,
}

/// A friend and the friendship key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FriendInfo {
    /// The friend.
    pub user: UserId,
    /// The friendship key, 64 hex digits.
    pub key: String,
}

/// Answer to [`FRIENDS`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FriendsResponse {
    /// Accepted friendships.
    pub friends: Vec<FriendInfo>,
    /// Users who asked you.
    pub incoming: Vec<UserId>,
    /// Users you asked.
    pub outgoing: Vec<UserId>,
    /// Users you blocked.
    #[serde(default)]
    pub blocked: Vec<UserId>,
}

/// Body of every REST error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A stable machine-readable code, such as `"unauthorized"`.
    pub error: String,
    /// A human-readable message.
    pub message: String,
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly 32 bytes of hex.
pub fn key_from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_round_trip() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(key_from_hex(&to_hex(&key)), Some(key));
        assert_eq!(key_from_hex("zz"), None);
        assert_eq!(key_from_hex(&"é".repeat(32)), None);
    }
}

/// `POST` — make a group (body [`NewGroup`]); `GET` — your groups and invitations
/// ([`GroupsResponse`]).
pub const GROUPS: &str = "/v1/groups";

/// `GET` — one group ([`GroupInfo`]); below it, `POST members` ([`MemberRequest`]: add a
/// friend, or invite anyone), `POST accept`, `POST remove` ([`MemberRequest`]),
/// `POST leave`, `POST rename` ([`NewGroup`]), `POST role` ([`RoleRequest`]), and
/// `GET receipts/{seq}` ([`GroupReceipts`]).
pub const GROUP: &str = "/v1/groups/{group}";

/// Body of [`GROUPS`] (make) and of `rename`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewGroup {
    /// The group's name, 1 to 100 bytes.
    pub name: String,
}

/// Body of `members` and `remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberRequest {
    /// The user.
    pub user: String,
}

/// Body of `role`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleRequest {
    /// The member.
    pub user: String,
    /// Their new role; `owner` hands the group over.
    pub role: crate::Role,
}

/// A member and their role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The member.
    pub user: UserId,
    /// Their role.
    pub role: crate::Role,
}

/// A group key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKeyInfo {
    /// Its epoch.
    pub epoch: u32,
    /// The key, 64 hex digits.
    pub key: String,
}

/// What a member sees of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group.
    pub id: crate::GroupId,
    /// Its name.
    pub name: String,
    /// The epoch to seal new messages at.
    pub epoch: u32,
    /// Who is in it.
    pub members: Vec<GroupMember>,
    /// The keys you hold: from the epoch you joined at to now.
    pub keys: Vec<GroupKeyInfo>,
}

/// An invitation waiting for you.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInvitation {
    /// The group.
    pub id: crate::GroupId,
    /// Its name.
    pub name: String,
}

/// Answer to [`PUSH_MUTED`] and [`PUSH_MUTED_GROUP`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutedGroups {
    /// The groups muted, in no order.
    pub groups: Vec<crate::GroupId>,
}

/// Answer to `GET` [`GROUPS`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupsResponse {
    /// Your groups.
    pub groups: Vec<GroupInfo>,
    /// Invitations waiting for you.
    pub invitations: Vec<GroupInvitation>,
}

/// Answer to a membership change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChangeResponse {
    /// `added`, `invited`, `accepted`, `removed`, `left`, `renamed`, `role_changed`.
    pub status: String,
    /// The change's entry in the group's log (none for an invitation).
    pub seq: Option<crate::Seq>,
}

/// One member's progress with a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReceipt {
    /// The member.
    pub user: UserId,
    /// A device of theirs has it.
    pub delivered: bool,
    /// They read it.
    pub read: bool,
}

/// Answer to `GET receipts/{seq}`: delivered to N of M, read by K of M.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReceipts {
    /// Members now (M).
    pub members: usize,
    /// Members with a device that has the message (N).
    pub delivered: usize,
    /// Members who read it (K).
    pub read: usize,
    /// Each member, for groups of up to 32.
    pub by_member: Option<Vec<MemberReceipt>>,
}
