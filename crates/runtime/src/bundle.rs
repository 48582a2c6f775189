//! Bundles: a process function's directory as a deterministic tar archive,
//! addressed by its sha256, unpacked once per digest on each worker.

use crate::Error;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// sha256 of `bytes`, in hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Packs `dir` into a tar archive whose bytes depend only on the files' names,
/// contents and executable bits (sorted entries, zero times and owners).
/// Symbolic links and special files are refused.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, Error> {
    if !dir.is_dir() {
        return Err(Error::InvalidBundle(format!("{} is not a directory", dir.display())));
    }
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut builder = tar::Builder::new(Vec::new());
    for rel in files {
        let full = dir.join(&rel);
        let meta = std::fs::metadata(&full)?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &rel, std::io::empty())?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            builder.append_data(&mut header, &rel, std::fs::File::open(&full)?)?;
        }
    }
    Ok(builder.into_inner()?)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        let rel = path.strip_prefix(root).expect("below root").to_path_buf();
        if ty.is_symlink() {
            return Err(Error::InvalidBundle(format!(
                "{} is a symbolic link; bundles hold regular files only",
                rel.display()
            )));
        } else if ty.is_dir() {
            if rel.file_name().is_some_and(|n| n == "__pycache__" || n == ".git") {
                continue;
            }
            out.push(rel);
            collect(root, &path, out)?;
        } else if ty.is_file() {
            out.push(rel);
        } else {
            return Err(Error::InvalidBundle(format!("{} is not a regular file", rel.display())));
        }
    }
    Ok(())
}

/// Unpacks `archive` into `dest` unless it is already there. The directory
/// appears whole or not at all (unpacked beside it, then renamed).
pub fn unpack_once(archive: &[u8], dest: &Path) -> Result<(), Error> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().ok_or_else(|| Error::InvalidBundle("no parent directory".into()))?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempdir_in(parent)?;
    let unpacked = unpack_into(archive, &tmp);
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e.into())
        }
    }
}

/// Unpacks every entry into `dir`, with modes normalised as [`pack_dir`]
/// writes them (0755 for directories and executables, 0644 otherwise):
/// an archive from elsewhere carries no setuid bit or world-writable file.
fn unpack_into(archive: &[u8], dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut ar = tar::Archive::new(archive);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let ty = entry.header().entry_type();
        if !(ty.is_file() || ty.is_dir()) {
            return Err(Error::InvalidBundle("bundles hold regular files and directories only".into()));
        }
        let exec = entry.header().mode().unwrap_or(0) & 0o111 != 0;
        let path = dir.join(entry.path()?);
        if !entry.unpack_in(dir)? {
            return Err(Error::InvalidBundle("an entry's path escapes the bundle".into()));
        }
        let mode = if ty.is_dir() || exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Removes what unpacks cut short by a crash left in `dir` (the parent of
/// unpacked bundles).
pub fn remove_partial_unpacks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".unpack-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, Error> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = parent.join(format!(".unpack-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_deterministic_and_round_trips() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        std::fs::write(a.path().join("main.py"), b"print(1)").unwrap();
        std::fs::write(a.path().join("sub/data.txt"), b"x").unwrap();
        let one = pack_dir(a.path()).unwrap();
        let two = pack_dir(a.path()).unwrap();
        assert_eq!(digest(&one), digest(&two));
        std::fs::write(a.path().join("main.py"), b"print(2)").unwrap();
        assert_ne!(digest(&pack_dir(a.path()).unwrap()), digest(&one));

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("b");
        unpack_once(&one, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("main.py")).unwrap(), b"print(1)");
        assert_eq!(std::fs::read(dest.join("sub/data.txt")).unwrap(), b"x");
        unpack_once(&one, &dest).unwrap();
    }

    #[test]
    fn symlinks_are_refused() {
        let a = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("p")).unwrap();
        assert!(matches!(pack_dir(a.path()), Err(Error::InvalidBundle(_))));
    }

    fn archive(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            if *ty == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn modes_are_normalised_and_a_failed_unpack_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let good = archive(&[
            ("d", tar::EntryType::Directory, 0o777, b""),
            ("d/run", tar::EntryType::Regular, 0o4777, b"#!/bin/sh"),
            ("d/data", tar::EntryType::Regular, 0o666, b"x"),
        ]);
        let dest = root.path().join("good");
        unpack_once(&good, &dest).unwrap();
        let mode = |p: &str| std::fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode("d"), mode("d/run"), mode("d/data")), (0o755, 0o755, 0o644));

        let bad = archive(&[
            ("a", tar::EntryType::Regular, 0o644, b"partial"),
            ("link", tar::EntryType::Symlink, 0o777, b""),
        ]);
        assert!(unpack_once(&bad, &root.path().join("bad")).is_err());
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("good")], "no partial unpack is left");

        std::fs::create_dir_all(root.path().join(".unpack-99-0/x")).unwrap();
        remove_partial_unpacks(root.path());
        assert!(!root.path().join(".unpack-99-0").exists());
        assert!(dest.is_dir());
    }
}
