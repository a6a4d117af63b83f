//! The profile folder, kept between runs of the `quiver` command: the server address, the
//! CA and the files `listen` showed (`profile.json`), and the SDK's client store
//! (`store.sqlite3`: session, friendship keys, cursor, outbox and history). A `send` cut
//! short leaves its message in the store's outbox; the next command that connects sends
//! it.

use anyhow::{bail, Context};
use quiver_sdk::{
    App, BlobId, FileInfo, FileOffer, FileRef, GroupFile, GroupId, Rest, Seq, Session, Store,
    UserId,
};
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
    /// Files that `listen` showed, by the seq of their message, for `get-file`.
    #[serde(default)]
    pub files: BTreeMap<u64, SavedFile>,
    /// Files sent to groups that `listen` showed: by group, then by the seq of their
    /// entry in the group's log.
    #[serde(default)]
    pub group_files: BTreeMap<String, BTreeMap<u64, SavedFile>>,
    /// The profile folder.
    #[serde(skip)]
    dir: PathBuf,
    /// This run carries its connection over TCP only (`--tcp`); not saved.
    #[serde(skip)]
    pub tcp_only: bool,
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
    /// For a file sent to a group: where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<SavedGroupFile>,
}

/// Where a file sent to a group is, as kept in the profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedGroupFile {
    /// The group's id.
    pub group: String,
    /// The seq of its entry in the group's log.
    pub seq: u64,
    /// The key epoch it is sealed at.
    pub epoch: u32,
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
            group: offer.group.as_ref().map(|g| SavedGroupFile {
                group: g.group.to_string(),
                seq: g.seq.0,
                epoch: g.epoch,
            }),
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
            group: match &self.group {
                Some(g) => Some(GroupFile {
                    group: GroupId::parse(&g.group)?,
                    seq: Seq(g.seq),
                    epoch: g.epoch,
                }),
                None => None,
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
        let mut profile: Self = match std::fs::read(Self::file(dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("reading profile.json")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(e).context("reading profile.json"),
        };
        profile.dir = dir.to_owned();
        Ok(profile)
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

    /// The client store's file.
    fn store_path(&self) -> PathBuf {
        self.dir.join("store.sqlite3")
    }

    /// The app: the client store and the profile's server.
    pub fn app(&self) -> anyhow::Result<App> {
        let Some(server) = &self.server else {
            bail!("no server in the profile: pass --server")
        };
        create_private_dir(&self.dir)?;
        let store = Store::open(self.store_path()).context("opening the profile's store")?;
        Ok(App::new(store, server, &self.ca_pem()?)?)
    }

    /// Starts the store afresh (another user logs in with this profile).
    pub fn forget_store(&mut self) -> anyhow::Result<()> {
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", self.store_path().display()));
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        self.files.clear();
        Ok(())
    }

    /// The saved session, or an error telling the user to log in.
    pub fn session(&self) -> anyhow::Result<Session> {
        self.app()?
            .store()
            .session()?
            .context("not logged in: run `quiver login` first")
    }

    /// The token, or an error telling the user to log in.
    pub fn token(&self) -> anyhow::Result<String> {
        Ok(self.session()?.token)
    }

    /// Whether the store has a friendship key for `friend`.
    pub fn knows(&self, friend: &UserId) -> anyhow::Result<bool> {
        Ok(self.app()?.store().friend_keys()?.contains_key(friend))
    }
}

/// Makes `dir` (readable by its owner only) if it is missing.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}
