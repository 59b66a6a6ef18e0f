//! Files that hold keys: written with mode 0600 so only oubli's user can read them.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to a new file readable and writable by the owner only.
///
/// # Errors
/// When the file cannot be created or written.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
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
