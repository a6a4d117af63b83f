//! `quiver group …`: make groups, manage their members, list them; and the group keys a
//! connection needs to open group messages.

use crate::output::say_json;
use crate::profile::Profile;
use clap::Subcommand;
use quiver_sdk::{GroupId, GroupInfo, GroupKeys, Rest, Role, Seq};
use serde_json::json;
use std::collections::HashMap;

/// The group commands. Every one prints one JSON line.
#[derive(Subcommand)]
pub enum GroupCmd {
    /// Make a group; you are its owner.
    Create {
        /// Its name.
        name: String,
    },
    /// Your groups and the invitations waiting for you.
    List,
    /// A group's members and their roles.
    Members {
        /// The group id (`g` and 16 hex digits).
        group: String,
    },
    /// Add a user: at once if you are an owner or admin and a friend of theirs, else as
    /// an invitation they accept.
    Add {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// Invite a user (the same call as `add`: the node decides by the rule above).
    Invite {
        /// The group.
        group: String,
        /// The user.
        user: String,
    },
    /// Accept an invitation.
    Accept {
        /// The group.
        group: String,
    },
    /// Remove a member (owner or admin); the group gets a new key.
    Remove {
        /// The group.
        group: String,
        /// The member.
        user: String,
    },
    /// Leave a group.
    Leave {
        /// The group.
        group: String,
    },
    /// Rename a group (any member may).
    Rename {
        /// The group.
        group: String,
        /// The new name.
        name: String,
    },
    /// Give a member a role: owner (hands the group over), admin or member.
    Role {
        /// The group.
        group: String,
        /// The member.
        user: String,
        /// owner, admin or member.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Delivered to N of M and read by K of M, for the message at `seq`.
    Receipts {
        /// The group.
        group: String,
        /// The message's seq in the group.
        seq: u64,
    },
}

fn parse_role(role: &str) -> Result<Role, String> {
    match role {
        "owner" => Ok(Role::Owner),
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        other => Err(format!("{other}: owner, admin or member")),
    }
}

/// Runs one group command.
pub async fn run(cmd: GroupCmd, profile: &Profile) -> anyhow::Result<()> {
    let rest = profile.rest()?;
    let token = &profile.token()?;
    let id = |g: &str| GroupId::parse(g).map_err(|e| anyhow::anyhow!("{g}: {e}"));
    let changed = |r: quiver_sdk::GroupChangeResponse, group: &str| {
        say_json(&json!({
            "event": "group", "group": group, "status": r.status, "seq": r.seq.map(|s| s.0),
        }))
    };
    match cmd {
        GroupCmd::Create { name } => {
            let info = rest.create_group(token, &name).await?;
            say_json(
                &json!({ "event": "group", "group": info.id, "status": "created", "name": info.name }),
            )?;
        }
        GroupCmd::List => {
            let all = rest.groups(token).await?;
            let groups: Vec<_> = all
                .groups
                .iter()
                .map(|g| json!({ "group": g.id, "name": g.name, "members": g.members.len() }))
                .collect();
            let invitations: Vec<_> = all
                .invitations
                .iter()
                .map(|i| json!({ "group": i.id, "name": i.name }))
                .collect();
            say_json(&json!({ "groups": groups, "invitations": invitations }))?;
        }
        GroupCmd::Members { group } => {
            let info = rest.group(token, &id(&group)?).await?;
            let members: Vec<_> = info
                .members
                .iter()
                .map(|m| json!({ "user": m.user, "role": m.role }))
                .collect();
            say_json(&json!({ "group": info.id, "name": info.name, "members": members }))?;
        }
        GroupCmd::Add { group, user } | GroupCmd::Invite { group, user } => {
            changed(rest.add_member(token, &id(&group)?, &user).await?, &group)?;
        }
        GroupCmd::Accept { group } => {
            changed(rest.accept_invitation(token, &id(&group)?).await?, &group)?;
        }
        GroupCmd::Remove { group, user } => {
            changed(
                rest.remove_member(token, &id(&group)?, &user).await?,
                &group,
            )?;
        }
        GroupCmd::Leave { group } => {
            changed(rest.leave_group(token, &id(&group)?).await?, &group)?;
        }
        GroupCmd::Rename { group, name } => {
            changed(rest.rename_group(token, &id(&group)?, &name).await?, &group)?;
        }
        GroupCmd::Role { group, user, role } => {
            changed(
                rest.set_role(token, &id(&group)?, &user, role).await?,
                &group,
            )?;
        }
        GroupCmd::Receipts { group, seq } => {
            let r = rest.group_receipts(token, &id(&group)?, Seq(seq)).await?;
            say_json(&json!({
                "group": group, "seq": seq, "members": r.members, "delivered": r.delivered,
                "read": r.read, "by_member": r.by_member,
            }))?;
        }
    }
    Ok(())
}

/// The keys of every group the user is in, fetched now (the node keeps them; the
/// profile does not).
pub async fn keys(rest: &Rest, token: &str) -> anyhow::Result<HashMap<GroupId, GroupKeys>> {
    let groups = rest.groups(token).await?.groups;
    Ok(groups
        .iter()
        .map(|g: &GroupInfo| (g.id.clone(), GroupKeys::from_info(g)))
        .collect())
}
