//! The docs stay true by test (issue "Hostile and careless input", item 20): every fleet-file
//! example in README.md and docs/ is extracted and parsed by ovbmc's own fleet parser, then
//! served — rewritten to the simulator on loopback addresses — and answered by ipmitool; every
//! `ovbmc …` command line shown is parsed by ovbmc's clap definition.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;

use crate::fleet::FleetProc;
use crate::support::{
    CLIENT_TIMEOUT, PASSWORD, ScratchDir, client, free_udp_port, ovbmc_bin, run, unique_loopback,
};

/// A fenced block or an inline `ovbmc …` span of one Markdown file.
struct Snippet {
    file: PathBuf,
    line: usize,
    lang: String,
    text: String,
}

fn markdown_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Every fenced code block of `file` (``` or ```lang).
fn fenced_blocks(file: &Path) -> Vec<Snippet> {
    let text = fs::read_to_string(file).expect("read markdown");
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("```") {
            match open.take() {
                Some((line, lang, body)) => out.push(Snippet {
                    file: file.to_path_buf(),
                    line,
                    lang,
                    text: body,
                }),
                None => open = Some((i + 1, rest.trim().to_string(), String::new())),
            }
        } else if let Some((_, _, body)) = open.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Inline `ovbmc …` code spans outside fenced blocks.
fn inline_commands(file: &Path) -> Vec<Snippet> {
    let text = fs::read_to_string(file).expect("read markdown");
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (k, span) in line.split('`').enumerate() {
            if k % 2 == 1 && span.starts_with("ovbmc ") {
                out.push(Snippet {
                    file: file.to_path_buf(),
                    line: i + 1,
                    lang: "inline".into(),
                    text: span.to_string(),
                });
            }
        }
    }
    out
}

/// Split a shell command line into words: whitespace separates, single and double quotes group,
/// a backslash escapes (enough for the command lines the docs show).
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// The `ovbmc …` command lines of a shell block: continuation lines joined, a `$ ` or `sudo `
/// prefix dropped, and cut at a shell operator or comment.
fn commands_in(block: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut acc = String::new();
    for line in block.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            acc.push_str(head);
            acc.push(' ');
            continue;
        }
        acc.push_str(line);
        joined.push(std::mem::take(&mut acc));
    }
    let mut out = Vec::new();
    for line in joined {
        let mut l = line.trim();
        // `# …` is a comment (or program output) in these blocks, not a root prompt.
        if l.starts_with('#') {
            continue;
        }
        for prefix in ["$ ", "sudo "] {
            l = l.strip_prefix(prefix).unwrap_or(l).trim_start();
        }
        let first = l.split_whitespace().next().unwrap_or("");
        let cmd = if first == "ovbmc" || first.ends_with("/ovbmc") {
            l
        } else if l.starts_with("podman run") || l.starts_with("docker run") {
            // `podman run [options] IMAGE ARGS…`: the image's entrypoint is ovbmc, so the last
            // ` ovbmc ` starts its command line.
            match l.rfind(" ovbmc ") {
                Some(at) => &l[at + 1..],
                None => continue,
            }
        } else {
            continue;
        };
        let cmd = cmd
            .split(['|', ';', '&', '#', '>'])
            .next()
            .unwrap_or(cmd)
            .trim();
        out.push(cmd.to_string());
    }
    out
}

/// A template rather than a command (`--bind ADDR [--bind ADDR ...]`): not parsed.
fn is_template(cmd: &str) -> bool {
    cmd.contains('[') || cmd.contains("...") || cmd.contains('…') || cmd.contains('<')
}

/// Every `ovbmc …` command line in the docs is one that ovbmc's command line accepts.
#[test]
fn every_documented_command_line_parses() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in markdown_files() {
        let mut cmds: Vec<(usize, String)> = Vec::new();
        for b in fenced_blocks(&file) {
            if matches!(b.lang.as_str(), "" | "sh" | "bash" | "console" | "shell") {
                cmds.extend(commands_in(&b.text).into_iter().map(|c| (b.line, c)));
            }
        }
        let inline: Vec<(usize, String)> = inline_commands(&file)
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect();
        for (line, cmd, fragment) in cmds
            .into_iter()
            .map(|(l, c)| (l, c, false))
            .chain(inline.into_iter().map(|(l, c)| (l, c, true)))
        {
            if is_template(&cmd) {
                continue;
            }
            let Some(words) = shell_words(&cmd) else {
                bad.push(format!("{}:{line}: cannot split {cmd:?}", file.display()));
                continue;
            };
            checked += 1;
            if let Err(e) = ovbmc::cli::Cli::try_parse_from(&words) {
                use clap::error::ErrorKind as K;
                // --help and --version "fail" with a display message: that is a success. An
                // inline span in prose may be a fragment (`ovbmc --config` "process", a flag
                // named without the rest of the line): only a flag or value ovbmc does not know
                // is an error there.
                let ok = match e.kind() {
                    K::DisplayHelp | K::DisplayVersion => true,
                    K::MissingRequiredArgument | K::MissingSubcommand => fragment,
                    K::InvalidValue => {
                        fragment && words.last().is_some_and(|w| w.starts_with("--"))
                    }
                    _ => false,
                };
                if !ok {
                    bad.push(format!("{}:{line}: `{cmd}`: {e}", file.display()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "documented command lines ovbmc refuses:\n{}",
        bad.join("\n")
    );
    assert!(
        checked >= 5,
        "only {checked} command lines found in the docs"
    );
}

/// Every TOML block in the docs is a fleet file ovbmc accepts.
#[test]
fn every_documented_fleet_file_parses() {
    let mut n = 0;
    for file in markdown_files() {
        for b in fenced_blocks(&file)
            .into_iter()
            .filter(|b| b.lang == "toml")
        {
            n += 1;
            let at = Path::new("/etc/ovbmc/fleet.toml");
            if let Err(e) = ovbmc::config::Fleet::parse(&b.text, at) {
                panic!(
                    "{}:{}: the example fleet file is refused: {e}",
                    b.file.display(),
                    b.line
                );
            }
        }
    }
    assert!(n >= 2, "only {n} fleet-file examples found in the docs");
}

/// Rewrite a documented fleet file so that it can be served here: the simulator instead of
/// Nova, loopback addresses and free ports, a password file in `dir`, no routing, no cloud, no
/// metrics. Everything else (users, privileges, timings) is kept.
fn servable(text: &str, dir: &Path) -> (String, Vec<(std::net::Ipv4Addr, u16, String)>) {
    let mut t: toml::Table = text.parse().expect("toml");
    let pw = dir.join("ipmi-password");
    fs::write(&pw, PASSWORD).unwrap();
    t.remove("cloud");
    t.remove("routing");
    // The Redfish face (docs/redfish.md) listens on its own address; these tests are about the BMCs.
    t.remove("redfish");
    let defaults = t
        .entry("defaults")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("[defaults] is a table");
    defaults.insert("backend".into(), "sim".into());
    defaults.remove("metrics");
    defaults.remove("port");
    for k in [
        "password_file",
        "insecure_inline_password",
        "password_env",
        "kg_file",
    ] {
        defaults.remove(k);
    }
    defaults.insert("password_file".into(), pw.display().to_string().into());
    let default_user = defaults
        .get("user")
        .and_then(|u| u.as_str())
        .unwrap_or("admin")
        .to_string();
    let mut bmcs = Vec::new();
    if let Some(list) = t.get_mut("bmc").and_then(|b| b.as_array_mut()) {
        for b in list.iter_mut().filter_map(|b| b.as_table_mut()) {
            let addr = unique_loopback();
            let port = free_udp_port(addr);
            b.insert("address".into(), addr.to_string().into());
            b.insert("port".into(), i64::from(port).into());
            for k in [
                "password_file",
                "insecure_inline_password",
                "password_env",
                "kg_file",
                "interface",
                "table",
                "prefix",
            ] {
                b.remove(k);
            }
            b.insert("backend".into(), "sim".into());
            let user = b
                .get("user")
                .and_then(|u| u.as_str())
                .unwrap_or(&default_user)
                .to_string();
            bmcs.push((addr, port, user));
        }
    }
    (toml::to_string(&t).expect("toml out"), bmcs)
}

/// Every documented fleet file, rewritten onto the simulator, serves: ipmitool reads the power
/// state of each of its BMCs.
#[test]
fn every_documented_fleet_file_serves_on_the_simulator() {
    let Some(ipmitool) = client("ipmitool", "ipmitool") else {
        return;
    };
    for file in markdown_files() {
        for b in fenced_blocks(&file)
            .into_iter()
            .filter(|b| b.lang == "toml")
        {
            let dir = ScratchDir::new("docfleet");
            let (text, bmcs) = servable(&b.text, dir.path());
            if bmcs.is_empty() {
                continue;
            }
            let fleet = dir.path().join("fleet.toml");
            fs::write(&fleet, &text).unwrap();
            let mut p = FleetProc::spawn(
                &[],
                &["--config".into(), fleet.display().to_string()],
                dir.path().join("ovbmc.log"),
            );
            let place = format!("{}:{}", b.file.display(), b.line);
            p.wait_log("serving", 1, Duration::from_secs(30))
                .unwrap_or_else(|log| {
                    panic!("{place}: the example does not serve:\n{text}\n{log}")
                });
            for (addr, port, user) in &bmcs {
                let pwfile = dir.path().join("ipmi-password");
                let r = run(
                    &ipmitool,
                    &[
                        "-I".into(),
                        "lanplus".into(),
                        "-H".into(),
                        addr.to_string(),
                        "-p".into(),
                        port.to_string(),
                        "-U".into(),
                        user.clone(),
                        "-f".into(),
                        pwfile.display().to_string(),
                        "power".into(),
                        "status".into(),
                    ],
                    &[],
                    CLIENT_TIMEOUT,
                );
                assert!(
                    r.success() && r.stdout.contains("Chassis Power is"),
                    "{place}: {addr}:{port} does not answer:\n{r}\n{}",
                    p.log()
                );
            }
            drop(p);
        }
    }
    let _ = ovbmc_bin();
}
