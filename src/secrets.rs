//! Reading secrets from files and the environment, never from the command line (where
//! `ps` shows them) and never into logs.

use std::path::Path;

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

/// Read a secret file; one trailing newline (LF or CRLF) is not part of the secret, since
/// `echo secret > file` adds it.
pub fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut v = Zeroizing::new(
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    if v.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(v)
}

/// The IPMI password: from `file` if given, else from `OVBMC_PASSWORD`.
pub fn ipmi_password(file: Option<&Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = file {
        return read_secret_file(f).context("reading the IPMI password file");
    }
    match std::env::var_os("OVBMC_PASSWORD") {
        Some(v) if !v.is_empty() => Ok(Zeroizing::new(v.into_encoded_bytes())),
        _ => bail!(
            "no IPMI password: give --password-file FILE or set OVBMC_PASSWORD \
             (ovbmc has no default password)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newline_is_not_part_of_the_secret() {
        let dir = std::env::temp_dir().join(format!("ovbmc-secret-{}", std::process::id()));
        std::fs::write(&dir, b"s3cret\r\n").unwrap();
        assert_eq!(&read_secret_file(&dir).unwrap()[..], b"s3cret");
        std::fs::write(&dir, b"\n").unwrap();
        assert!(read_secret_file(&dir).is_err());
        let _ = std::fs::remove_file(&dir);
    }
}
