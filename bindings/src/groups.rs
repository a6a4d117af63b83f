//! Groups for the app: make one, add or invite, accept, remove, leave, list; send text
//! and files to a group; download a group's file. Keys are the SDK's business: it fetches
//! a group's keys when it first sends there or meets an epoch it has no key for.

use crate::app::{QuiverApp, SentMessage};
use crate::error::{group, user, QuiverError};
use quiver_sdk::{Conversation, FileOffer, GroupInfo, Seq};

/// A group you are in, or are invited to.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct GroupLine {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its members (empty for an invitation).
    pub members: Vec<String>,
}

impl From<&GroupInfo> for GroupLine {
    fn from(info: &GroupInfo) -> Self {
        Self {
            id: info.id.to_string(),
            name: info.name.clone(),
            members: info.members.iter().map(|m| m.user.to_string()).collect(),
        }
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl QuiverApp {
    /// Makes a group named `name` with you as its owner; returns its id.
    pub async fn create_group(&self, name: String) -> Result<String, QuiverError> {
        let token = self.token()?;
        let made = self.rest().create_group(&token, &name).await?;
        Ok(made.id.to_string())
    }

    /// The groups you are in.
    pub async fn groups(&self) -> Result<Vec<GroupLine>, QuiverError> {
        let listed = self.rest().groups(&self.token()?).await?;
        Ok(listed.groups.iter().map(GroupLine::from).collect())
    }

    /// The groups inviting you.
    pub async fn group_invitations(&self) -> Result<Vec<GroupLine>, QuiverError> {
        let listed = self.rest().groups(&self.token()?).await?;
        let lines = listed.invitations.into_iter().map(|i| GroupLine {
            id: i.id.to_string(),
            name: i.name,
            members: Vec::new(),
        });
        Ok(lines.collect())
    }

    /// Adds `member` to `group_id` (a friend of yours at once: `"added"`; anyone else is
    /// invited: `"invited"`).
    pub async fn add_member(
        &self,
        group_id: String,
        member: String,
    ) -> Result<String, QuiverError> {
        let (token, group, member) = (self.token()?, group(&group_id)?, user(&member)?);
        let added = self.rest().add_member(&token, &group, member.as_str());
        Ok(added.await?.status)
    }

    /// Accepts the invitation to `group_id`.
    pub async fn accept_invitation(&self, group_id: String) -> Result<(), QuiverError> {
        let (token, group) = (self.token()?, group(&group_id)?);
        self.rest().accept_invitation(&token, &group).await?;
        Ok(())
    }

    /// Removes `member` from `group_id` (owner and admins).
    pub async fn remove_member(&self, group_id: String, member: String) -> Result<(), QuiverError> {
        let (token, group, member) = (self.token()?, group(&group_id)?, user(&member)?);
        self.rest()
            .remove_member(&token, &group, member.as_str())
            .await?;
        Ok(())
    }

    /// Leaves `group_id`.
    pub async fn leave_group(&self, group_id: String) -> Result<(), QuiverError> {
        let (token, group) = (self.token()?, group(&group_id)?);
        self.rest().leave_group(&token, &group).await?;
        Ok(())
    }

    /// Sends `text` to `group_id`; returns once it is durable in the group's log (SENT).
    pub async fn send_group(
        &self,
        group_id: String,
        text: String,
    ) -> Result<SentMessage, QuiverError> {
        let group = group(&group_id)?;
        let sent = self.client()?.send_group(&group, text.as_bytes()).await?;
        Ok(sent.into())
    }

    /// Sends the file at `path` to `group_id`; returns once the message naming it is SENT.
    pub async fn send_group_file(
        &self,
        group_id: String,
        path: String,
        media_type: String,
    ) -> Result<SentMessage, QuiverError> {
        let group = group(&group_id)?;
        let transfer = self
            .client()?
            .send_group_file(&group, path, &media_type, |_| {});
        let sent = transfer.await?;
        Ok(sent.sent.into())
    }

    /// Downloads the file of the group message at `seq` of `group_id` (a `GroupMessage`
    /// event with a file name, or one in the store) to `path`; returns its size in
    /// sealed bytes.
    pub async fn download_group_file(
        &self,
        group_id: String,
        seq: u64,
        path: String,
    ) -> Result<u64, QuiverError> {
        let group = group(&group_id)?;
        let stored = self
            .app()
            .store()
            .message_at(&Conversation::Group(group), Seq(seq))?;
        let offer = stored
            .as_ref()
            .and_then(FileOffer::from_stored)
            .ok_or_else(|| QuiverError::Invalid {
                message: format!("no file message at seq {seq} of {group_id}"),
            })?;
        let report = self.client()?.download(&offer, path, |_| {}).await?;
        Ok(report.size)
    }

    /// Tells the group you read its log up to `seq`.
    pub fn mark_group_read(&self, group_id: String, seq: u64) -> Result<(), QuiverError> {
        let group = group(&group_id)?;
        Ok(self.client()?.mark_group_read(&group, Seq(seq))?)
    }
}
