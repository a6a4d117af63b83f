//! Keeping the node's data private to the user it runs as.
//!
//! The data folder holds everything an attacker on the same machine would want: the sled
//! database (password hashes and every friendship key), the inbox log, sealed blobs, the
//! token key and the dev CA key. So the folder is `0700`, everything in it `0600` (folders
//! `0700`), whatever the umask the node was started with:
//!
//! - [`restrict_umask`] makes every file the node creates from then on (sled's included,
//!   which we do not open ourselves) private at birth;
//! - [`private_folder`] makes the folder, or tightens an existing one that is looser, and
//!   refuses one that another user owns;
//! - [`tighten_below`] tightens whatever an older version or a careless copy left looser
//!   inside it, and says so in the log;
//! - [`check_key`] refuses a private key file, given by the operator, that other users
//!   can read (as ssh does), rather than serve with a key that may already be stolen.

use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The bits that give group or others any access.
const OTHERS: u32 = 0o077;

/// Why the data folder or a key cannot be made private.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// A file or folder could not be read, made or changed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data folder belongs to another user: the node will not use it.
    #[error("{path} belongs to uid {owner}, not to the node's uid {me}: refusing to use it")]
    NotOurs {
        /// The folder.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The node's effective uid.
        me: u32,
    },
    /// A private key that other users can read or change.
    #[error(
        "{path} has mode {mode:04o}: other users can read or change this private key; \
         run `chmod 600 {path}` (and replace the key if it may have been copied)"
    )]
    ExposedKey {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError + '_ {
    move |source| PrivateError::Io {
        path: path.into(),
        source,
    }
}

/// Sets the process umask to `077`, so that every file and folder created from now on is
/// its owner's only. Process-wide on purpose: a node's process is the node.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(OTHERS));
}

/// Makes `dir` (and any missing parent) with mode `0700`, or tightens an existing one to
/// `0700`. Refuses a folder owned by another user.
pub fn private_folder(dir: &Path) -> Result<(), PrivateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateError::NotOurs {
            path: dir.into(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & OTHERS != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{:04o}", meta.mode() & 0o7777), "data folder was open to other users; tightened to 0700");
        std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// Tightens every file below `dir` to `0600` and every folder to `0700` where group or
/// others had any access. Links are not followed. Returns how many were tightened.
pub fn tighten_below(dir: &Path) -> Result<usize, PrivateError> {
    let mut tightened = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let path = entry.map_err(io(&folder))?.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            let private = if meta.is_dir() {
                pending.push(path.clone());
                0o700
            } else if meta.is_file() {
                0o600
            } else {
                continue;
            };
            if meta.mode() & OTHERS != 0 {
                std::fs::set_permissions(&path, Permissions::from_mode(private))
                    .map_err(io(&path))?;
                tightened += 1;
            }
        }
    }
    if tightened > 0 {
        tracing::warn!(dir = %dir.display(), tightened, "files in the data folder were open to other users; tightened");
    }
    Ok(tightened)
}

/// Refuses a private key file that group or others may read or change.
pub fn check_key(path: &Path) -> Result<(), PrivateError> {
    let mode = std::fs::metadata(path).map_err(io(path))?.mode() & 0o7777;
    if mode & OTHERS != 0 {
        return Err(PrivateError::ExposedKey {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn loose_folders_and_files_are_tightened_and_exposed_keys_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(data.join("inbox")).unwrap();
        std::fs::set_permissions(data.join("inbox"), Permissions::from_mode(0o755)).unwrap();
        let log = data.join("inbox").join("0.log");
        std::fs::write(&log, b"sealed").unwrap();
        std::fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        let fine = data.join("fine");
        std::fs::write(&fine, b"x").unwrap();
        std::fs::set_permissions(&fine, Permissions::from_mode(0o600)).unwrap();

        private_folder(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(tighten_below(&data).unwrap(), 2, "the folder and the log");
        assert_eq!(mode(&data.join("inbox")), 0o700);
        assert_eq!(mode(&log), 0o600);
        assert_eq!(tighten_below(&data).unwrap(), 0, "nothing left to do");

        let fresh = root.path().join("a").join("b");
        private_folder(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let key = root.path().join("node.key");
        std::fs::write(&key, b"key").unwrap();
        std::fs::set_permissions(&key, Permissions::from_mode(0o640)).unwrap();
        let err = check_key(&key).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, Permissions::from_mode(0o400)).unwrap();
        check_key(&key).unwrap();
    }
}
