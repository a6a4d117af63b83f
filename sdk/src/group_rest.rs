//! [`Rest`] for groups: make one, list them, manage members and roles, ask for receipts.
//! Chat in a group goes over QUIC ([`crate::Client::send_group`]); membership is REST,
//! as friends are.

use crate::error::RestError;
use crate::rest::Rest;
use quiver_proto::rest::{
    self, GroupChangeResponse, GroupInfo, GroupReceipts, GroupsResponse, MemberRequest, NewGroup,
    RoleRequest,
};
use quiver_proto::{GroupId, Role, Seq};

impl Rest {
    fn group_path(group: &GroupId, below: &str) -> String {
        format!("{}{below}", rest::GROUP.replace("{group}", group.as_str()))
    }

    async fn group_post(
        &self,
        token: &str,
        group: &GroupId,
        below: &str,
        body: &impl serde::Serialize,
    ) -> Result<GroupChangeResponse, RestError> {
        let path = Self::group_path(group, below);
        self.call(self.post(&path, body, Some(token))).await
    }

    /// Makes a group with you as its owner.
    pub async fn create_group(&self, token: &str, name: &str) -> Result<GroupInfo, RestError> {
        let body = NewGroup { name: name.into() };
        self.call(self.post(rest::GROUPS, &body, Some(token))).await
    }

    /// Your groups (with their keys) and the invitations waiting for you.
    pub async fn groups(&self, token: &str) -> Result<GroupsResponse, RestError> {
        let url = format!("{}{}", self.base, rest::GROUPS);
        self.call(self.http.get(url).bearer_auth(token)).await
    }

    /// One group: its members, its epoch and the keys you hold.
    pub async fn group(&self, token: &str, group: &GroupId) -> Result<GroupInfo, RestError> {
        let url = format!("{}{}", self.base, Self::group_path(group, ""));
        self.call(self.http.get(url).bearer_auth(token)).await
    }

    /// Adds `user` (an owner or admin adding a friend: `added`), or invites them
    /// (`invited`: they join when they accept).
    pub async fn add_member(
        &self,
        token: &str,
        group: &GroupId,
        user: &str,
    ) -> Result<GroupChangeResponse, RestError> {
        let body = MemberRequest { user: user.into() };
        self.group_post(token, group, "/members", &body).await
    }

    /// Accepts an invitation to `group`.
    pub async fn accept_invitation(
        &self,
        token: &str,
        group: &GroupId,
    ) -> Result<GroupChangeResponse, RestError> {
        self.group_post(token, group, "/accept", &serde_json::json!({}))
            .await
    }

    /// Removes `user` from `group` (owner or admin); the group gets a new key.
    pub async fn remove_member(
        &self,
        token: &str,
        group: &GroupId,
        user: &str,
    ) -> Result<GroupChangeResponse, RestError> {
        let body = MemberRequest { user: user.into() };
        self.group_post(token, group, "/remove", &body).await
    }

    /// Leaves `group`; the group gets a new key.
    pub async fn leave_group(
        &self,
        token: &str,
        group: &GroupId,
    ) -> Result<GroupChangeResponse, RestError> {
        self.group_post(token, group, "/leave", &serde_json::json!({}))
            .await
    }

    /// Renames `group` (any member may).
    pub async fn rename_group(
        &self,
        token: &str,
        group: &GroupId,
        name: &str,
    ) -> Result<GroupChangeResponse, RestError> {
        let body = NewGroup { name: name.into() };
        self.group_post(token, group, "/rename", &body).await
    }

    /// Gives `user` a new role; `Role::Owner` hands the group over (owner only).
    pub async fn set_role(
        &self,
        token: &str,
        group: &GroupId,
        user: &str,
        role: Role,
    ) -> Result<GroupChangeResponse, RestError> {
        let body = RoleRequest {
            user: user.into(),
            role,
        };
        self.group_post(token, group, "/role", &body).await
    }

    /// Delivered to N of M, read by K of M, for the message at `seq` (and each member's
    /// state in groups of up to 32).
    pub async fn group_receipts(
        &self,
        token: &str,
        group: &GroupId,
        seq: Seq,
    ) -> Result<GroupReceipts, RestError> {
        let path = Self::group_path(group, &format!("/receipts/{}", seq.0));
        let url = format!("{}{path}", self.base);
        self.call(self.http.get(url).bearer_auth(token)).await
    }
}
