//! Leases on SQLite: an exclusive lock on a file next to the database, one per lease name.
//!
//! The operating system releases the lock when its holder closes the file or dies, so a
//! crashed holder never keeps a lease. Processes that share the database file share its
//! directory, and so see each other's leases.

use std::fs::{OpenOptions, TryLockError};
use std::path::PathBuf;

use cqrs_core::{Error, Lease, Leases, Result};

use super::SqliteStore;

impl SqliteStore {
    /// `<database>.lease-<name>`, with every byte of the name other than ASCII letters,
    /// digits, `-` and `_` written as `%XX`.
    fn lease_path(&self, name: &str) -> PathBuf {
        let mut file = self.inner.path.as_os_str().to_owned();
        file.push(".lease-");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                file.push(char::from(byte).to_string());
            } else {
                file.push(format!("%{byte:02X}"));
            }
        }
        PathBuf::from(file)
    }
}

impl Leases for SqliteStore {
    async fn try_acquire(&self, name: &str) -> Result<Option<Lease>> {
        let path = self.lease_path(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::transient(format!("cannot open the lease file {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => {
                return Err(Error::transient(format!(
                    "cannot lock the lease file {}: {e}",
                    path.display()
                )));
            }
        }
        // The open, locked file is the lease.
        Ok(Some(Lease::until_dropped(name, file)))
    }
}
