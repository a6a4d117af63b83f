//! [`Rest`]: the account API over HTTPS — register, log in, friends.

use crate::error::RestError;
use quiver_proto::rest::{self, ApiErrorBody, FriendStatus, FriendsResponse, LoginResponse};
use quiver_proto::{DeviceId, GroupId};
use serde::{de::DeserializeOwned, Serialize};

/// A client of one node's REST API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Rest {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Rest {
    /// A client for `base_url` (such as `https://127.0.0.1:8443`) trusting `ca_pem`.
    pub fn new(base_url: &str, ca_pem: &str) -> Result<Self, RestError> {
        let tls =
            crate::tls::rustls_config(ca_pem, &[b"h2", b"http/1.1"]).map_err(RestError::Tls)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RestError> {
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let body: Option<ApiErrorBody> = response.json().await.ok();
        let (error, message) = body.map_or_else(
            || ("unknown".to_owned(), status.to_string()),
            |b| (b.error, b.message),
        );
        Err(RestError::Api {
            status: status.as_u16(),
            error,
            message,
        })
    }

    pub(crate) fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Creates an account.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), RestError> {
        let body = rest::RegisterRequest {
            user: user.into(),
            password: password.into(),
        };
        self.call::<serde_json::Value>(self.post(rest::REGISTER, &body, None))
            .await?;
        Ok(())
    }

    /// Logs in. Pass the device id of an earlier login to stay the same device.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        device: Option<DeviceId>,
    ) -> Result<LoginResponse, RestError> {
        let body = rest::LoginRequest {
            user: user.into(),
            password: password.into(),
            device,
        };
        self.call(self.post(rest::LOGIN, &body, None)).await
    }

    /// Asks `user` to be friends; if they had asked already, you are friends now.
    pub async fn request_friend(&self, token: &str, user: &str) -> Result<FriendStatus, RestError> {
        let body = rest::FriendRequest { user: user.into() };
        self.call(self.post(rest::FRIEND_REQUESTS, &body, Some(token)))
            .await
    }

    /// Accepts `user`'s friend request.
    pub async fn accept_friend(&self, token: &str, user: &str) -> Result<FriendStatus, RestError> {
        let body = rest::FriendRequest { user: user.into() };
        self.call(self.post(rest::FRIEND_ACCEPT, &body, Some(token)))
            .await
    }

    /// Ends the friendship with `user` (or withdraws or refuses a request): neither can
    /// send to the other any more. Making friends again makes a new key.
    pub async fn remove_friend(&self, token: &str, user: &str) -> Result<FriendStatus, RestError> {
        let body = rest::FriendRequest { user: user.into() };
        self.call(self.post(rest::FRIEND_REMOVE, &body, Some(token)))
            .await
    }

    /// Blocks `user`: ends the friendship and any request between you, and drops their
    /// requests to you from now on (they are not told).
    pub async fn block(&self, token: &str, user: &str) -> Result<FriendStatus, RestError> {
        let body = rest::FriendRequest { user: user.into() };
        self.call(self.post(rest::FRIEND_BLOCK, &body, Some(token)))
            .await
    }

    /// Lifts a block of `user`.
    pub async fn unblock(&self, token: &str, user: &str) -> Result<FriendStatus, RestError> {
        let body = rest::FriendRequest { user: user.into() };
        self.call(self.post(rest::FRIEND_UNBLOCK, &body, Some(token)))
            .await
    }

    /// Registers this device (the token's) for push notifications while it is away.
    pub async fn set_push_target(
        &self,
        token: &str,
        target: &rest::PushTarget,
    ) -> Result<(), RestError> {
        self.call::<serde_json::Value>(self.post(rest::PUSH, target, Some(token)))
            .await?;
        Ok(())
    }

    /// Stops push notifications for this device.
    pub async fn remove_push_target(&self, token: &str) -> Result<(), RestError> {
        let request = self
            .http
            .delete(format!("{}{}", self.base, rest::PUSH))
            .bearer_auth(token);
        self.call::<serde_json::Value>(request).await?;
        Ok(())
    }

    /// Mutes `group`'s push notifications on every device of yours (chats still
    /// arrive); answers the groups you muted now. At most as many as you may be in:
    /// past that, `409 quota_exceeded`.
    pub async fn mute_group(
        &self,
        token: &str,
        group: &GroupId,
    ) -> Result<Vec<GroupId>, RestError> {
        let request = self.http.put(self.muted_url(group)).bearer_auth(token);
        Ok(self.call::<rest::MutedGroups>(request).await?.groups)
    }

    /// Unmutes `group`'s push notifications; answers the groups still muted.
    pub async fn unmute_group(
        &self,
        token: &str,
        group: &GroupId,
    ) -> Result<Vec<GroupId>, RestError> {
        let request = self.http.delete(self.muted_url(group)).bearer_auth(token);
        Ok(self.call::<rest::MutedGroups>(request).await?.groups)
    }

    /// The groups whose push notifications you muted.
    pub async fn muted_groups(&self, token: &str) -> Result<Vec<GroupId>, RestError> {
        let url = format!("{}{}", self.base, rest::PUSH_MUTED);
        let request = self.http.get(url).bearer_auth(token);
        Ok(self.call::<rest::MutedGroups>(request).await?.groups)
    }

    fn muted_url(&self, group: &GroupId) -> String {
        let path = rest::PUSH_MUTED_GROUP.replace("{group}", group.as_str());
        format!("{}{path}", self.base)
    }

    /// Friends (with friendship keys), pending requests and blocked users.
    pub async fn friends(&self, token: &str) -> Result<FriendsResponse, RestError> {
        let url = format!("{}{}", self.base, rest::FRIENDS);
        self.call(self.http.get(url).bearer_auth(token)).await
    }

    /// Logs out this token's device, or every device of the user: their tokens stop
    /// working for REST and for new connections.
    pub async fn logout(&self, token: &str, all_devices: bool) -> Result<(), RestError> {
        let body = rest::LogoutRequest { all_devices };
        self.call::<serde_json::Value>(self.post(rest::LOGOUT, &body, Some(token)))
            .await?;
        Ok(())
    }

    /// The node's metrics in Prometheus text form (an operator endpoint; for tools and
    /// tests, not apps).
    pub async fn metrics(&self) -> Result<String, RestError> {
        let url = format!("{}{}", self.base, rest::METRICS);
        let response = self.http.get(url).send().await?.error_for_status()?;
        Ok(response.text().await?)
    }

    /// Whether the node can take new sessions now (`GET /v1/ready`).
    pub async fn ready(&self) -> Result<(), RestError> {
        let url = format!("{}{}", self.base, rest::READY);
        self.call::<serde_json::Value>(self.http.get(url))
            .await
            .map(|_| ())
    }

    /// Whether the node answers.
    pub async fn health(&self) -> Result<(), RestError> {
        let url = format!("{}{}", self.base, rest::HEALTH);
        self.call::<serde_json::Value>(self.http.get(url))
            .await
            .map(|_| ())
    }
}
