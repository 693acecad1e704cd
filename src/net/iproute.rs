//! [`NetOps`] with iproute2 (`--routing ip`): `ip -j` (JSON output, iproute2 ≥ 4.14) to read,
//! `ip ... add|del` to change. The fallback to the netlink backend: every change is exactly
//! the command `ovbmc routes --dry-run` prints, so it is the easiest to trace and to compare
//! with by hand, and it does not depend on the rtnetlink crate's parsing of kernel messages.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::{Applied, Cidr, HostState, IfAddr, NetError, NetOps, Op, Route, Rule};

/// iproute2's `ip`.
#[derive(Clone, Debug)]
pub struct IpCommand {
    program: PathBuf,
}

impl Default for IpCommand {
    fn default() -> Self {
        Self {
            program: PathBuf::from("ip"),
        }
    }
}

impl IpCommand {
    fn run(&self, args: &[String]) -> Result<String, NetError> {
        let command = format!("{} {}", self.program.display(), args.join(" "));
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|error| NetError::Spawn {
                program: self.program.display().to_string(),
                error,
            })?;
        if !out.status.success() {
            return Err(NetError::Command {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Result<Vec<Value>, NetError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let command = format!("ip {}", args.join(" "));
        let text = match self.run(&args) {
            Ok(t) => t,
            // A table nobody has put a route in yet: "Error: ipv4: FIB table does not exist."
            Err(NetError::Command { stderr, .. }) if stderr.contains("does not exist") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(a)) => Ok(a),
            Ok(_) => Err(NetError::Output {
                command,
                message: "not a JSON array".into(),
            }),
            Err(e) => Err(NetError::Output {
                command,
                message: e.to_string(),
            }),
        }
    }

    fn routes(&self, family: &str, table: &str) -> Result<Vec<Route>, NetError> {
        Ok(self
            .json(&[family, "-j", "route", "show", "table", table])?
            .iter()
            .filter_map(parse_route)
            .collect())
    }
}

impl NetOps for IpCommand {
    fn state(&self, tables: &[u32]) -> Result<HostState, NetError> {
        let mut st = HostState::default();
        for link in self.json(&["-j", "addr", "show"])? {
            let (Some(ifindex), Some(ifname)) = (
                link.get("ifindex").and_then(Value::as_u64),
                link.get("ifname").and_then(Value::as_str),
            ) else {
                continue;
            };
            let ifindex = u32::try_from(ifindex).unwrap_or(u32::MAX);
            st.links.push((ifindex, ifname.to_string()));
            for a in link
                .get("addr_info")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let local = a
                    .get("local")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok());
                let prefix = a.get("prefixlen").and_then(Value::as_u64);
                if let (Some(addr), Some(prefix)) = (local, prefix) {
                    st.addrs.push(IfAddr {
                        ifindex,
                        ifname: ifname.to_string(),
                        cidr: Cidr {
                            addr,
                            prefix: u8::try_from(prefix).unwrap_or(0),
                        },
                    });
                }
            }
        }
        for fam in ["-4", "-6"] {
            st.main_routes.extend(self.routes(fam, "main")?);
            st.rules.extend(
                self.json(&[fam, "-j", "rule", "show"])?
                    .iter()
                    .filter_map(parse_rule),
            );
            for t in tables {
                let r = self.routes(fam, &t.to_string())?;
                st.tables.entry(*t).or_default().extend(r);
            }
        }
        Ok(st)
    }

    fn apply(&self, op: &Op, add: bool) -> Result<Applied, NetError> {
        match self.run(&op.args(add)) {
            Ok(_) => Ok(Applied::Done),
            Err(NetError::Command { command, stderr }) => match classify(&stderr, add) {
                Some(Ok(a)) => Ok(a),
                Some(Err(())) => Err(NetError::Permission { command }),
                None => Err(NetError::Command { command, stderr }),
            },
            Err(e) => Err(e),
        }
    }
}

/// What `ip`'s complaint means: `Some(Ok(_))` nothing to do, `Some(Err(()))` no privilege,
/// `None` a real failure. The texts are iproute2's `RTNETLINK answers: <strerror>` or the
/// kernel's extended ack (`Error: ...`), as iproute2 6.1 on Linux 6.18 prints them.
fn classify(stderr: &str, add: bool) -> Option<Result<Applied, ()>> {
    if stderr.contains("Operation not permitted") {
        return Some(Err(()));
    }
    let nothing_to_do: &[&str] = if add {
        // EEXIST; "Address already assigned" is the extack text for an address.
        &["File exists", "already assigned"]
    } else {
        // ENOENT (rule), ESRCH (route), EADDRNOTAVAIL / extack (address).
        &[
            "No such file or directory",
            "No such process",
            "ddress not found",
            "Cannot assign requested address",
            "does not exist",
        ]
    };
    nothing_to_do
        .iter()
        .any(|t| stderr.contains(t))
        .then_some(Ok(Applied::AlreadyThere))
}

/// `"default"`, `"198.51.100.0/24"` or a host address (`ip` omits `/32`).
fn parse_prefix(s: &str) -> Option<Option<Cidr>> {
    if s == "default" {
        return Some(None);
    }
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse().ok()?),
        None => {
            let a: IpAddr = s.parse().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    Some(Some(Cidr { addr: a, prefix: p }))
}

fn parse_route(v: &Value) -> Option<Route> {
    Some(Route {
        dst: parse_prefix(v.get("dst")?.as_str()?)?,
        gateway: v
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok()),
        dev: v.get("dev").and_then(Value::as_str).map(str::to_string),
    })
}

fn parse_rule(v: &Value) -> Option<Rule> {
    let table = match v.get("table")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let src = match v.get("src").and_then(Value::as_str) {
        None | Some("all") => None,
        Some(s) => {
            let mut c = parse_prefix(s)??;
            if let Some(len) = v.get("srclen").and_then(Value::as_u64) {
                c.prefix = u8::try_from(len).ok()?;
            }
            Some(c)
        }
    };
    Some(Rule { src, table })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ip_errors() {
        // Printed by iproute2 6.1 on Linux 6.18.
        assert_eq!(
            classify("RTNETLINK answers: File exists", true),
            Some(Ok(Applied::AlreadyThere))
        );
        assert_eq!(
            classify("Error: ipv4: Address already assigned.", true),
            Some(Ok(Applied::AlreadyThere))
        );
        for gone in [
            "RTNETLINK answers: No such file or directory",
            "RTNETLINK answers: No such process",
            "Error: ipv4: Address not found.",
            "Error: ipv6: address not found.",
            "Error: FIB table does not exist.",
        ] {
            assert_eq!(
                classify(gone, false),
                Some(Ok(Applied::AlreadyThere)),
                "{gone}"
            );
        }
        assert_eq!(
            classify("RTNETLINK answers: Operation not permitted", true),
            Some(Err(()))
        );
        assert_eq!(classify("Error: Nexthop has invalid gateway.", true), None);
        assert_eq!(classify("RTNETLINK answers: No such process", true), None);
    }

    #[test]
    fn parses_ip_json() {
        // Captured from iproute2 6.1 (Debian 12).
        let routes: Vec<Value> = serde_json::from_str(
            r#"[{"dst":"default","gateway":"198.51.100.1","dev":"d0","flags":[]},
                {"dst":"198.51.100.0/24","dev":"d0","protocol":"kernel","scope":"link","prefsrc":"198.51.100.10","flags":[]},
                {"dst":"198.51.100.7","dev":"d0","flags":[]}]"#,
        )
        .unwrap();
        let r: Vec<Route> = routes.iter().filter_map(parse_route).collect();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].dst, None);
        assert_eq!(r[0].gateway, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(r[1].dst.unwrap().to_string(), "198.51.100.0/24");
        assert_eq!(r[2].dst.unwrap().prefix, 32);
        let rules: Vec<Value> = serde_json::from_str(
            r#"[{"priority":0,"src":"all","table":"local"},
                {"priority":1000,"src":"198.51.100.10","table":"1002"},
                {"priority":1001,"src":"198.51.100.0","srclen":24,"table":7}]"#,
        )
        .unwrap();
        let r: Vec<Rule> = rules.iter().filter_map(parse_rule).collect();
        assert_eq!(r[0].src, None);
        assert_eq!(r[1].src.unwrap().to_string(), "198.51.100.10/32");
        assert_eq!(r[1].table, "1002");
        assert_eq!(r[2].src.unwrap().prefix, 24);
        assert_eq!(r[2].table, "7");
    }
}
