//! Reading secrets from files and the environment, never from the command line (where
//! `ps` shows them) and never into logs.
//!
//! A secret file must be a regular file. A pipe is accepted only under a descriptor path
//! (`/dev/stdin`, `/dev/fd/N`, `/proc/self/fd/N`: the `--password-file <(pass show bmc)` and
//! `echo pw | ovbmc --password-file /dev/stdin` idioms), and is read with a deadline. Every
//! file is opened with `O_NONBLOCK`, so a FIFO with no writer, a device or a socket can never
//! block the process in `open()` or `read()`: before this, a FIFO named as the password file
//! held the main thread in `open(2)` and SIGTERM went unanswered until something wrote to it.
//! Files that the group or others may read get a warning (at start and at every reload).

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

/// The largest secret file read (passwords and Kg are at most 20 bytes in IPMI; a hex Kg and
/// a trailing newline are longer, and this leaves room for any reasonable password manager
/// output). A larger file is refused rather than read into memory.
const MAX_SECRET_BYTES: usize = 4096;

/// How long a pipe may take to deliver its secret and end (EOF).
const PIPE_DEADLINE: Duration = Duration::from_secs(10);

/// Read a secret file; one trailing newline (LF or CRLF) is not part of the secret, since
/// `echo secret > file` adds it.
pub fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut v = read_raw(path)?;
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

/// Read a Kg (BMC key) file. Kg is 1–20 bytes (IPMI v2.0 §13.31). The file holds either the
/// key itself, or its hexadecimal form — as Ironic's `ipmi_hex_kg_key` and ipmitool's `-y`
/// take it — written `0x…`, or as more than 20 hex digits (which cannot be a key itself, as a
/// key is at most 20 bytes).
pub fn read_kg_file(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let raw = read_secret_file(path)?;
    parse_kg(&raw).with_context(|| format!("{} is not a valid Kg", path.display()))
}

/// See [`read_kg_file`].
pub fn parse_kg(raw: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let hex_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_hexdigit);
    let hex = match raw {
        [b'0', b'x' | b'X', rest @ ..] => Some(rest),
        _ if raw.len() > 20 && hex_digits(raw) => Some(raw),
        _ => None,
    };
    let key = match hex {
        Some(h) => {
            if !hex_digits(h) || h.len() % 2 != 0 {
                bail!("a hex Kg needs an even number of hex digits after 0x");
            }
            let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            Zeroizing::new(
                h.chunks_exact(2)
                    .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
                    .collect::<Vec<u8>>(),
            )
        }
        None => Zeroizing::new(raw.to_vec()),
    };
    if key.is_empty() || key.len() > 20 {
        bail!(
            "Kg is {} bytes; IPMI allows 1 to 20 (or 2 to 40 hex digits)",
            key.len()
        );
    }
    Ok(key)
}

/// Warn if `path` can be read by its group or by others, naming what it holds.
pub fn warn_if_exposed(path: &Path, what: &str) {
    if let Ok(meta) = std::fs::metadata(path)
        && let Some(msg) = exposure(path, &meta, what)
    {
        tracing::warn!("{msg}");
    }
}

/// The warning for a regular file whose mode lets the group or others read it, if any.
fn exposure(path: &Path, meta: &Metadata, what: &str) -> Option<String> {
    let mode = meta.mode() & 0o777;
    (meta.file_type().is_file() && mode & 0o044 != 0).then(|| {
        format!(
            "{} ({what}) is readable by {} (mode {mode:04o}): chmod 600 it",
            path.display(),
            if mode & 0o004 != 0 {
                "every user"
            } else {
                "its group"
            },
        )
    })
}

/// A path that names an already-open descriptor, where a pipe is the expected thing to find.
fn is_descriptor_path(path: &Path) -> bool {
    let s = path.as_os_str().as_encoded_bytes();
    s == b"/dev/stdin"
        || s.starts_with(b"/dev/fd/")
        || s.starts_with(b"/proc/self/fd/")
        || s.starts_with(b"/proc/thread-self/fd/")
}

fn read_raw(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let cant = || format!("cannot read {}", path.display());
    // O_NONBLOCK: open(2) of a FIFO without a writer returns at once instead of blocking
    // (fifo(7)); for regular files the flag has no effect (open(2), "O_NONBLOCK").
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .with_context(cant)?;
    let meta = f.metadata().with_context(cant)?;
    let ft = meta.file_type();
    if ft.is_file() {
        if let Some(msg) = exposure(path, &meta, "a secret") {
            tracing::warn!("{msg}");
        }
        if meta.len() > MAX_SECRET_BYTES as u64 {
            bail!(
                "{} is {} bytes: too large for a secret (at most {MAX_SECRET_BYTES})",
                path.display(),
                meta.len()
            );
        }
        let mut v = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        f.by_ref()
            .take(MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut v)
            .with_context(cant)?;
        return Ok(v);
    }
    if ft.is_fifo() && is_descriptor_path(path) {
        return read_pipe(&mut f, path);
    }
    let kind = if ft.is_fifo() {
        "a named pipe (FIFO)"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    bail!(
        "{} is {kind}: a secret file must be a regular file (a pipe is accepted only as \
         /dev/stdin or /dev/fd/N, e.g. --password-file <(pass show bmc))",
        path.display()
    )
}

/// Read a pipe to its end, without ever blocking for long: the descriptor is non-blocking, so
/// an empty pipe is polled until its writer closes it or [`PIPE_DEADLINE`] passes.
fn read_pipe(f: &mut File, path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let deadline = Instant::now() + PIPE_DEADLINE;
    let mut v = Zeroizing::new(Vec::new());
    let mut buf = Zeroizing::new([0u8; 512]);
    loop {
        match f.read(&mut buf[..]) {
            Ok(0) => return Ok(v),
            Ok(n) => {
                v.extend_from_slice(&buf[..n]);
                if v.len() > MAX_SECRET_BYTES {
                    bail!("{}: more than {MAX_SECRET_BYTES} bytes", path.display());
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    bail!(
                        "{}: the pipe did not deliver the secret and end within {} s",
                        path.display(),
                        PIPE_DEADLINE.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        }
    }
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
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ovbmc-secret-{}-{tag}", std::process::id()))
    }

    #[test]
    fn trailing_newline_is_not_part_of_the_secret() {
        let p = scratch("nl");
        std::fs::write(&p, b"s3cret\r\n").unwrap();
        assert_eq!(&read_secret_file(&p).unwrap()[..], b"s3cret");
        std::fs::write(&p, b"\n").unwrap();
        assert!(read_secret_file(&p).is_err());
        let _ = std::fs::remove_file(&p);
    }

    /// A FIFO with no writer is refused at once (before: open(2) blocked forever).
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let p = scratch("fifo");
        let _ = std::fs::remove_file(&p);
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("named pipe"), "{e}");
        assert!(t0.elapsed() < PIPE_DEADLINE, "took {:?}", t0.elapsed());
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let e = read_secret_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a device"), "{e}");
        let e = read_secret_file(&std::env::temp_dir())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn group_or_world_readable_files_are_named() {
        let p = scratch("mode");
        std::fs::write(&p, b"pw").unwrap();
        for (mode, want) in [
            (0o600, None),
            (0o640, Some("its group")),
            (0o644, Some("every user")),
            (0o666, Some("every user")),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let meta = std::fs::metadata(&p).unwrap();
            let got = exposure(&p, &meta, "x");
            match want {
                None => assert!(got.is_none(), "{mode:o}: {got:?}"),
                Some(w) => assert!(
                    got.as_deref().unwrap_or("").contains(w),
                    "{mode:o}: {got:?}"
                ),
            }
        }
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn oversized_files_are_refused() {
        let p = scratch("big");
        std::fs::write(&p, vec![b'a'; MAX_SECRET_BYTES + 1]).unwrap();
        assert!(
            read_secret_file(&p)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn kg_raw_and_hex_forms() {
        assert_eq!(&parse_kg(b"secretkg").unwrap()[..], b"secretkg");
        assert_eq!(&parse_kg(b"0x0102ff").unwrap()[..], &[1, 2, 0xff]);
        assert_eq!(&parse_kg(b"0X0A").unwrap()[..], &[0x0a]);
        // 40 hex digits: Ironic's ipmi_hex_kg_key form for a 20-byte key.
        let hex40 = "00112233445566778899aabbccddeeff00112233";
        let k = parse_kg(hex40.as_bytes()).unwrap();
        assert_eq!(k.len(), 20);
        assert_eq!(k[..3], [0x00, 0x11, 0x22]);
        // 20 characters that happen to be hex digits are a key in their own right.
        assert_eq!(
            &parse_kg(b"00112233445566778899").unwrap()[..],
            b"00112233445566778899"
        );
        for bad in [
            &b"0x"[..],
            b"0x123",
            b"0xzz",
            &[b'k'; 21],
            b"0x00112233445566778899aabbccddeeff0011223344",
        ] {
            assert!(parse_kg(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
