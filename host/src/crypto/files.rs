//! Files that hold keys: written with mode 0600 so only oubli's user can read them.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a file readable and writable by the owner only, whole or not at all:
/// the bytes go to a file aside, which is synced and then renamed into place (and the
/// folder synced), so that a full disk or a crash never leaves an empty or partial key
/// file that would keep oubli from starting. On failure the file aside is removed.
///
/// # Errors
/// When the file cannot be created, written or put in place.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".writing-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let aside = parent.join(name);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&aside)
            .with_context(|| format!("creating {}", aside.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", aside.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", aside.display()))?;
        std::fs::rename(&aside, path)
            .with_context(|| format!("putting {} in place", path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
        return written;
    }
    // The rename is durable once the folder is.
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads the key file at `path`, or, when there is none, writes `fresh` there (mode 0600)
/// and returns it. Processes racing to create the same file all end up with the one that
/// was written first: the new file is written aside and linked into place, which fails
/// when another got there first.
///
/// # Errors
/// When the file cannot be read or written.
pub fn read_or_create(path: &Path, fresh: &[u8]) -> anyhow::Result<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(path) {
        return Ok(bytes);
    }
    let aside = path.with_extension(format!("new{}", std::process::id()));
    write_private(&aside, fresh)?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(fresh.to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_write_is_whole_or_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("data.key");
        write_private(&path, b"first").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A write that cannot be put in place (a folder is there) fails and leaves no
        // file of its own behind.
        let blocked = dir.path().join("keys").join("blocked.key");
        std::fs::create_dir(&blocked).unwrap();
        assert!(write_private(&blocked, b"key").is_err());
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["blocked.key", "data.key"]);
    }
}
