//! The profile folder: server address, CA, token, device id, friendship keys and the
//! listening cursor, kept between runs of the `quiver` command (`profile.json`).

use anyhow::{bail, Context};
use quiver_sdk::{BlobId, FileInfo, FileOffer, FileRef, FriendKey, Rest, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one profile remembers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profile {
    /// REST base URL, e.g. `https://127.0.0.1:8443`.
    pub server: Option<String>,
    /// Path of the CA certificate to trust.
    pub ca: Option<PathBuf>,
    /// The logged-in user.
    pub user: Option<String>,
    /// This install's device id (kept across logins).
    pub device: Option<u64>,
    /// The current token.
    pub token: Option<String>,
    /// The node's QUIC address from login.
    pub quic_addr: Option<String>,
    /// Friendship keys (hex), by friend.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Everything up to this seq was shown by `listen` or `chat`.
    #[serde(default)]
    pub cursor: u64,
    /// Files that `listen` showed, by the seq of their message, for `get-file`.
    #[serde(default)]
    pub files: BTreeMap<u64, SavedFile>,
}

/// A file message as kept in the profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedFile {
    /// The sender.
    pub from: String,
    /// File name.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// Plaintext size.
    pub size: u64,
    /// Plaintext SHA-256, hex.
    pub sha256: String,
    /// The blob id, hex.
    pub blob: String,
    /// Sealed size.
    pub sealed_size: u64,
}

impl From<&FileOffer> for SavedFile {
    fn from(offer: &FileOffer) -> Self {
        Self {
            from: offer.from.to_string(),
            name: offer.info.name.clone(),
            media_type: offer.info.media_type.clone(),
            size: offer.info.size,
            sha256: hex(&offer.info.sha256),
            blob: offer.file.blob.to_hex(),
            sealed_size: offer.file.size,
        }
    }
}

impl SavedFile {
    /// The offer to download.
    pub fn offer(&self) -> anyhow::Result<FileOffer> {
        let bad = || anyhow::anyhow!("the profile's record of {} is damaged", self.name);
        Ok(FileOffer {
            from: UserId::parse(&self.from)?,
            info: FileInfo {
                name: self.name.clone(),
                media_type: self.media_type.clone(),
                size: self.size,
                sha256: quiver_sdk::key_from_hex(&self.sha256).ok_or_else(bad)?,
            },
            file: FileRef {
                blob: BlobId::from_hex(&self.blob).ok_or_else(bad)?,
                size: self.sealed_size,
            },
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Profile {
    fn file(dir: &Path) -> PathBuf {
        dir.join("profile.json")
    }

    /// Loads the profile in `dir`, or an empty one.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        match std::fs::read(Self::file(dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("reading profile.json"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).context("reading profile.json"),
        }
    }

    /// Saves the profile (readable by the owner only: it holds a token and keys).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("profile.json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(tmp, Self::file(dir))?;
        Ok(())
    }

    /// The CA PEM.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        let Some(ca) = &self.ca else {
            bail!("no CA in the profile: pass --ca")
        };
        std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))
    }

    /// A REST client for the profile's server.
    pub fn rest(&self) -> anyhow::Result<Rest> {
        let Some(server) = &self.server else {
            bail!("no server in the profile: pass --server")
        };
        Ok(Rest::new(server, &self.ca_pem()?)?)
    }

    /// The token, or an error telling the user to log in.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("not logged in: run `quiver login` first")
    }

    /// Fetches the friendship keys from the node and remembers them.
    pub async fn refresh_keys(&mut self) -> anyhow::Result<quiver_sdk::FriendsResponse> {
        let friends = self.rest()?.friends(self.token()?).await?;
        self.keys = friends
            .friends
            .iter()
            .map(|f| (f.user.to_string(), f.key.clone()))
            .collect();
        Ok(friends)
    }

    /// The keys in the SDK's form.
    pub fn sdk_keys(&self) -> std::collections::HashMap<UserId, FriendKey> {
        self.keys
            .iter()
            .filter_map(|(user, key)| {
                Some((
                    UserId::parse(user).ok()?,
                    FriendKey(quiver_sdk::key_from_hex(key)?),
                ))
            })
            .collect()
    }

    /// The saved cursor, if any.
    pub fn cursor(&self) -> Option<Seq> {
        (self.cursor > 0).then_some(Seq(self.cursor))
    }
}
