//! A download's `.part` file, private to this user: another local user must not be able
//! to plant one (a link to a victim's file, which the download would then truncate and
//! overwrite; or a world-readable file, to read the decrypted bytes as they arrive).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for appending: made new with mode `0600`, or, to resume, an existing one
/// only if it is a regular file (links are not followed), owned by this user, with one
/// name and no access for others. Anything else is refused.
pub fn open_part(path: &Path) -> io::Result<File> {
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let fresh = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow)
        .open(path);
    match fresh {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => return other,
    }
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(nofollow)
        .open(path)?;
    let meta = file.metadata()?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_file() || !ours || meta.nlink() != 1 || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to resume {}: not a private file of this user (mode {:o}, \
                 owner {}, {} names); remove it",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.nlink()
            ),
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_link_or_an_open_file_is_refused_and_a_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("photo.jpg.part");
        drop(open_part(&part).unwrap());
        assert_eq!(std::fs::metadata(&part).unwrap().mode() & 0o777, 0o600);
        drop(open_part(&part).unwrap());

        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let planted = dir.path().join("planted.part");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(open_part(&planted).is_err(), "a link is not followed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        let open = dir.path().join("open.part");
        std::fs::write(&open, b"").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = open_part(&open).unwrap_err();
        assert!(err.to_string().contains("not a private file"), "{err}");

        let hard = dir.path().join("hard.part");
        std::fs::hard_link(&part, &hard).unwrap();
        assert!(open_part(&hard).is_err(), "a second name");
    }
}
