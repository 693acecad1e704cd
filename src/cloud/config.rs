//! Cloud credentials, found the way openstacksdk finds them.
//!
//! Two sources, as in every OpenStack client:
//! * a named cloud (`--os-cloud` / `OS_CLOUD`) in the first `clouds.yaml` found on
//!   openstacksdk's search path, deep-merged with the first `secure.yaml` found on the same
//!   path (openstacksdk `openstack/config/loader.py`: `CONFIG_SEARCH_PATH`, `CONFIG_FILES`,
//!   `SECURE_FILES`, with `OS_CLIENT_CONFIG_FILE` / `OS_CLIENT_SECURE_FILE` prepended);
//! * otherwise the plain `OS_*` environment variables of an `openrc` file.
//!
//! Both are normalised to one [`CloudConfig`] through the same clouds.yaml-shaped JSON
//! value, so the two paths cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::CloudError;
use super::secret::Secret;

/// A Keystone domain, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    /// `{"id": ...}`
    Id(String),
    /// `{"name": ...}`
    Name(String),
}

/// A Keystone user, by id (globally unique) or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    /// `{"id": ...}`
    Id(String),
    /// `{"name": ..., "domain": ...}`
    Name {
        /// User name.
        name: String,
        /// The user's domain.
        domain: DomainRef,
    },
}

/// The project a password token is scoped to (Nova needs a project-scoped token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectRef {
    /// `{"id": ...}`
    Id(String),
    /// `{"name": ..., "domain": ...}`
    Name {
        /// Project name.
        name: String,
        /// The project's domain.
        domain: DomainRef,
    },
}

/// How we authenticate to Keystone v3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// The `password` method with a project scope (Keystone API v3, "Password authentication
    /// with scoped authorization").
    Password {
        /// The user.
        user: UserRef,
        /// The password.
        password: Secret,
        /// The project scope.
        project: ProjectRef,
    },
    /// The `application_credential` method; the credential carries its own project scope
    /// (Keystone API v3, "Authenticating with an Application Credential").
    ApplicationCredential {
        /// The credential by id (`None` when given by name).
        id: Option<String>,
        /// The credential by name, which then needs its owner.
        name: Option<(String, UserRef)>,
        /// The secret.
        secret: Secret,
    },
}

/// Everything needed to reach Nova.
#[derive(Clone, Debug)]
pub struct CloudConfig {
    /// Where it came from, for messages: the cloud name and file, or "OS_* environment".
    pub origin: String,
    /// Keystone v3 base URL, ending in `/v3`.
    pub auth_url: String,
    /// Credentials.
    pub auth: Auth,
    /// Region for the catalog lookup (`None`: any region).
    pub region: Option<String>,
    /// Endpoint interface: `public`, `internal` or `admin`.
    pub interface: String,
    /// Extra CA bundle (PEM) to trust.
    pub cacert: Option<PathBuf>,
    /// False when the config says `verify: false` / `insecure: true`.
    pub verify_tls: bool,
    /// `compute_endpoint_override`: the Nova URL to use instead of the catalog's (openstacksdk
    /// `CloudRegion.get_endpoint`, which also accepts the older `compute_endpoint`). For a BMC
    /// that reaches Nova through NAT, a proxy or a tunnel, where the catalog URL is not
    /// reachable. May contain `%(project_id)s`, filled from the token's project, as
    /// keystoneauth does.
    pub compute_endpoint_override: Option<String>,
    /// `image_endpoint_override`: the same for Glance (used by `--ipxe-image`).
    pub image_endpoint_override: Option<String>,
    /// `network_endpoint_override`: the same for Neutron (used by `ovbmc cloud`).
    pub network_endpoint_override: Option<String>,
}

/// The directories openstacksdk searches, in its order: the working directory, the user config
/// dir (`$XDG_CONFIG_HOME/openstack`, else `~/.config/openstack`), `~/.config/openstack`, the
/// XDG site dirs (`$XDG_CONFIG_DIRS`, else `/etc/xdg`, each + `/openstack`), `/etc/openstack`.
pub fn search_dirs(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    let home = env("SNAP_REAL_HOME")
        .or_else(|| env("HOME"))
        .filter(|h| !h.is_empty());
    match env("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        Some(x) => dirs.push(Path::new(&x).join("openstack")),
        None => {
            if let Some(h) = env("HOME").filter(|h| !h.is_empty()) {
                dirs.push(Path::new(&h).join(".config/openstack"));
            }
        }
    }
    if let Some(h) = home {
        dirs.push(Path::new(&h).join(".config/openstack"));
    }
    let xdg_dirs = env("XDG_CONFIG_DIRS")
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| "/etc/xdg".to_string());
    for d in xdg_dirs.split(':').filter(|d| !d.is_empty()) {
        dirs.push(Path::new(d).join("openstack"));
    }
    dirs.push(PathBuf::from("/etc/openstack"));
    dirs.dedup();
    dirs
}

/// Candidate files `<stem>.yaml`, `<stem>.yml`, `<stem>.json` in each directory, with an explicit
/// override first (`OS_CLIENT_CONFIG_FILE` for `clouds`, `OS_CLIENT_SECURE_FILE` for `secure`).
pub fn candidate_files(stem: &str, first: Option<&Path>, dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = first.map(Path::to_path_buf).into_iter().collect();
    for d in dirs {
        for ext in ["yaml", "yml", "json"] {
            files.push(d.join(format!("{stem}.{ext}")));
        }
    }
    files
}

/// Read the first file of `files` that exists and parses, as openstacksdk does (unreadable or
/// unparsable files are skipped with a warning). Returns the path and the document.
pub fn first_document(files: &[PathBuf]) -> Option<(PathBuf, Value)> {
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!("skipping {}: {e}", path.display());
                continue;
            }
        };
        match parse_document(path, &text) {
            Ok(v) => {
                if holds_secret(&v) {
                    crate::secrets::warn_if_exposed(path, "it holds a cloud password or secret");
                }
                return Some((path.clone(), v));
            }
            Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
        }
    }
    None
}

/// True if a clouds.yaml/secure.yaml document holds a password or an application credential
/// secret anywhere (openstacksdk's `auth` keys).
fn holds_secret(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| {
            matches!(k.as_str(), "password" | "application_credential_secret") || holds_secret(v)
        }),
        Value::Array(a) => a.iter().any(holds_secret),
        _ => false,
    }
}

fn parse_document(path: &Path, text: &str) -> Result<Value, String> {
    let v: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    if v.is_object() {
        Ok(v)
    } else {
        Err("not a mapping".into())
    }
}

/// Deep-merge `over` into `base` (maps merge key by key; anything else is replaced), as
/// openstacksdk's `merge_clouds` does for secure.yaml.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Load the configuration: a named cloud from clouds.yaml (+ secure.yaml), else `OS_*`.
///
/// `cloud` is `--os-cloud`/`OS_CLOUD`; `config_file` is `OS_CLIENT_CONFIG_FILE`; `env` reads the
/// environment (a parameter so that tests need not touch the process environment).
pub fn load(
    cloud: Option<&str>,
    config_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CloudConfig, CloudError> {
    let dirs = search_dirs(env);
    let secure_override = env("OS_CLIENT_SECURE_FILE").map(PathBuf::from);
    load_from(
        cloud,
        &candidate_files("clouds", config_file, &dirs),
        &candidate_files("secure", secure_override.as_deref(), &dirs),
        env,
    )
}

/// [`load`] with explicit candidate lists.
pub fn load_from(
    cloud: Option<&str>,
    clouds_files: &[PathBuf],
    secure_files: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CloudConfig, CloudError> {
    let Some(name) = cloud.filter(|c| !c.is_empty()) else {
        if env("OS_AUTH_URL").is_some_and(|u| !u.is_empty()) {
            return from_value(env_value(env), "OS_* environment".into());
        }
        return Err(CloudError::Config(
            "no credentials: pass --os-cloud NAME (or set OS_CLOUD) for a clouds.yaml entry, \
             or set OS_AUTH_URL and the other OS_* variables"
                .into(),
        ));
    };
    let Some((path, mut doc)) = first_document(clouds_files) else {
        let tried: Vec<String> = clouds_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(CloudError::Config(format!(
            "cloud {name:?} requested but no clouds.yaml found (looked in: {})",
            tried.join(", ")
        )));
    };
    let mut origin = format!("cloud {name:?} in {}", path.display());
    if let Some((spath, sdoc)) = first_document(secure_files) {
        merge(&mut doc, sdoc);
        origin.push_str(&format!(" + {}", spath.display()));
    }
    let entry = doc
        .get("clouds")
        .and_then(|c| c.get(name))
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = doc
                .get("clouds")
                .and_then(Value::as_object)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            CloudError::Config(format!(
                "no cloud named {name:?} in {} (clouds there: {})",
                path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    from_value(entry, origin)
}

/// The `OS_*` environment as a clouds.yaml cloud entry.
fn env_value(env: &dyn Fn(&str) -> Option<String>) -> Value {
    const AUTH: &[&str] = &[
        "AUTH_URL",
        "USERNAME",
        "USER_ID",
        "PASSWORD",
        "PROJECT_NAME",
        "PROJECT_ID",
        "TENANT_NAME",
        "TENANT_ID",
        "USER_DOMAIN_NAME",
        "USER_DOMAIN_ID",
        "PROJECT_DOMAIN_NAME",
        "PROJECT_DOMAIN_ID",
        "DOMAIN_NAME",
        "DOMAIN_ID",
        "DEFAULT_DOMAIN",
        "APPLICATION_CREDENTIAL_ID",
        "APPLICATION_CREDENTIAL_NAME",
        "APPLICATION_CREDENTIAL_SECRET",
    ];
    let mut auth = Map::new();
    for k in AUTH {
        if let Some(v) = env(&format!("OS_{k}")).filter(|v| !v.is_empty()) {
            auth.insert(k.to_ascii_lowercase(), Value::String(v));
        }
    }
    let mut cloud = Map::new();
    cloud.insert("auth".into(), Value::Object(auth));
    for (var, key) in [
        ("OS_AUTH_TYPE", "auth_type"),
        ("OS_REGION_NAME", "region_name"),
        ("OS_INTERFACE", "interface"),
        ("OS_ENDPOINT_TYPE", "interface"),
        ("OS_CACERT", "cacert"),
        ("OS_INSECURE", "insecure"),
        // openstacksdk turns every OS_FOO into the key `foo` (loader.py `_get_os_environ`).
        ("OS_COMPUTE_ENDPOINT_OVERRIDE", "compute_endpoint_override"),
        ("OS_COMPUTE_ENDPOINT", "compute_endpoint"),
        ("OS_IMAGE_ENDPOINT_OVERRIDE", "image_endpoint_override"),
        ("OS_IMAGE_ENDPOINT", "image_endpoint"),
        ("OS_NETWORK_ENDPOINT_OVERRIDE", "network_endpoint_override"),
        ("OS_NETWORK_ENDPOINT", "network_endpoint"),
    ] {
        if let Some(v) = env(var).filter(|v| !v.is_empty())
            && !cloud.contains_key(key)
        {
            cloud.insert(key.into(), Value::String(v));
        }
    }
    Value::Object(cloud)
}

/// A string-ish YAML scalar (YAML may type `project_id: 1234` or `password: 0042` as a number).
#[derive(Debug, Default)]
struct Str(Option<String>);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Str(match Value::deserialize(d)? {
            Value::Null => None,
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => return Err(serde::de::Error::custom("expected a string")),
        }))
    }
}

impl Str {
    fn take(self) -> Option<String> {
        self.0.filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuth {
    auth_url: Str,
    username: Str,
    user_id: Str,
    password: Str,
    project_name: Str,
    project_id: Str,
    tenant_name: Str,
    tenant_id: Str,
    user_domain_name: Str,
    user_domain_id: Str,
    project_domain_name: Str,
    project_domain_id: Str,
    domain_name: Str,
    domain_id: Str,
    default_domain: Str,
    application_credential_id: Str,
    application_credential_name: Str,
    application_credential_secret: Str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCloud {
    auth: RawAuth,
    auth_type: Str,
    region_name: Str,
    regions: Option<Vec<Value>>,
    interface: Str,
    cacert: Str,
    verify: Option<Value>,
    insecure: Option<Value>,
    profile: Str,
    compute_endpoint_override: Str,
    compute_endpoint: Str,
    image_endpoint_override: Str,
    image_endpoint: Str,
    network_endpoint_override: Str,
    network_endpoint: Str,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "1" | "true" | "yes"),
        Value::Number(n) => n.as_u64() != Some(0),
        _ => false,
    }
}

/// Build a [`CloudConfig`] from one clouds.yaml-shaped cloud entry.
fn from_value(v: Value, origin: String) -> Result<CloudConfig, CloudError> {
    let bad = |m: String| CloudError::Config(format!("{origin}: {m}"));
    let raw: RawCloud = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    if let Some(p) = raw.profile.take() {
        return Err(bad(format!(
            "vendor profiles (profile: {p}) are not supported; put auth_url and region_name in the entry"
        )));
    }
    let a = raw.auth;
    let auth_url = normalize_auth_url(&a.auth_url.take().ok_or_else(|| bad("no auth_url".into()))?)
        .map_err(bad)?;
    // Default domain for user and project names: domain_* then default_domain, else Keystone's
    // built-in `default` domain (the one devstack and most single-domain clouds use).
    let fallback_domain = match (
        a.domain_id.take(),
        a.domain_name.take(),
        a.default_domain.take(),
    ) {
        (Some(id), _, _) => DomainRef::Id(id),
        (None, Some(n), _) => DomainRef::Name(n),
        (None, None, Some(id)) => DomainRef::Id(id),
        (None, None, None) => DomainRef::Id("default".into()),
    };
    let domain = |id: Str, name: Str| match (id.take(), name.take()) {
        (Some(id), _) => DomainRef::Id(id),
        (None, Some(n)) => DomainRef::Name(n),
        (None, None) => fallback_domain.clone(),
    };
    let user_domain = domain(a.user_domain_id, a.user_domain_name);
    let project_domain = domain(a.project_domain_id, a.project_domain_name);
    let user = match (a.user_id.take(), a.username.take()) {
        (Some(id), _) => Some(UserRef::Id(id)),
        (None, Some(name)) => Some(UserRef::Name {
            name,
            domain: user_domain,
        }),
        (None, None) => None,
    };
    let app_secret = a.application_credential_secret.take();
    let auth_type = raw
        .auth_type
        .take()
        .map(|t| t.to_ascii_lowercase().replace('-', "_"))
        .unwrap_or_else(|| {
            if app_secret.is_some() {
                "v3applicationcredential".into()
            } else {
                "password".into()
            }
        });
    let auth = match auth_type.as_str() {
        "password" | "v3password" => {
            let user = user.ok_or_else(|| bad("password auth needs username or user_id".into()))?;
            let password = Secret::new(
                a.password
                    .take()
                    .ok_or_else(|| bad("password auth needs a password".into()))?,
            );
            let project = match (
                a.project_id.take().or(a.tenant_id.take()),
                a.project_name.take().or(a.tenant_name.take()),
            ) {
                (Some(id), _) => ProjectRef::Id(id),
                (None, Some(name)) => ProjectRef::Name {
                    name,
                    domain: project_domain,
                },
                (None, None) => {
                    return Err(bad(
                        "password auth needs project_name or project_id (Nova needs a \
                         project-scoped token)"
                            .into(),
                    ));
                }
            };
            Auth::Password {
                user,
                password,
                project,
            }
        }
        "v3applicationcredential"
        | "applicationcredential"
        | "application_credential"
        | "v3_application_credential" => {
            let secret = Secret::new(app_secret.ok_or_else(|| {
                bad("application credential auth needs application_credential_secret".into())
            })?);
            let id = a.application_credential_id.take();
            let name = match (id.is_some(), a.application_credential_name.take()) {
                (true, _) => None,
                (false, Some(n)) => Some((
                    n,
                    user.ok_or_else(|| {
                        bad(
                            "an application credential given by name needs username or user_id"
                                .into(),
                        )
                    })?,
                )),
                (false, None) => {
                    return Err(bad(
                        "application credential auth needs application_credential_id or _name"
                            .into(),
                    ));
                }
            };
            Auth::ApplicationCredential { id, name, secret }
        }
        other => {
            return Err(bad(format!(
                "auth_type {other:?} is not supported (use password or v3applicationcredential)"
            )));
        }
    };
    let region = raw.region_name.take().or_else(|| {
        raw.regions.and_then(|r| {
            r.into_iter().find_map(|x| match x {
                Value::String(s) => Some(s),
                Value::Object(m) => m.get("name").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
        })
    });
    // keystoneauth accepts "publicURL" style names from the v2 era.
    let interface = raw
        .interface
        .take()
        .map(|i| i.trim_end_matches("URL").to_ascii_lowercase())
        .unwrap_or_else(|| "public".into());
    if !matches!(interface.as_str(), "public" | "internal" | "admin") {
        return Err(bad(format!(
            "interface {interface:?} is not one of public, internal, admin"
        )));
    }
    let verify_tls = !(raw.verify.as_ref().is_some_and(|v| !truthy(v))
        || raw.insecure.as_ref().is_some_and(truthy));
    let override_url = |key: &str, over: Str, old: Str| -> Result<Option<String>, CloudError> {
        match over.take().or(old.take()) {
            None => Ok(None),
            Some(u) => {
                let u = u.trim().trim_end_matches('/').to_string();
                if u.starts_with("http://") || u.starts_with("https://") {
                    Ok(Some(u))
                } else {
                    Err(bad(format!("{key} {u:?} is not an http(s) URL")))
                }
            }
        }
    };
    let compute_endpoint_override = override_url(
        "compute_endpoint_override",
        raw.compute_endpoint_override,
        raw.compute_endpoint,
    )?;
    let image_endpoint_override = override_url(
        "image_endpoint_override",
        raw.image_endpoint_override,
        raw.image_endpoint,
    )?;
    let network_endpoint_override = override_url(
        "network_endpoint_override",
        raw.network_endpoint_override,
        raw.network_endpoint,
    )?;
    Ok(CloudConfig {
        origin,
        auth_url,
        auth,
        region,
        interface,
        cacert: raw.cacert.take().map(PathBuf::from),
        verify_tls,
        compute_endpoint_override,
        image_endpoint_override,
        network_endpoint_override,
    })
}

/// Keystone v3 base URL: `http://h:5000`, `http://h:5000/`, `http://h:5000/v3/` all become
/// `http://h:5000/v3` (keystoneauth discovers the version; we only speak v3).
fn normalize_auth_url(url: &str) -> Result<String, String> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Err(format!("auth_url {u:?} is not an http(s) URL"));
    }
    if u.ends_with("/v2.0") {
        return Err(format!(
            "auth_url {u:?} is Keystone v2.0, which is gone; use the v3 URL"
        ));
    }
    Ok(if u.ends_with("/v3") {
        u.to_string()
    } else {
        format!("{u}/v3")
    })
}

/// A snapshot of the process environment, for [`load`].
pub fn process_env() -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    move |k| vars.get(k).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clouds.yaml files that hold a secret are the ones checked for their mode.
    #[test]
    fn documents_with_secrets_are_recognised() {
        let doc = |t: &str| parse_document(Path::new("c.yaml"), t).unwrap();
        assert!(holds_secret(&doc("clouds: {lab: {auth: {password: x}}}")));
        assert!(holds_secret(&doc(
            "clouds: {lab: {auth: {application_credential_secret: x}}}"
        )));
        assert!(!holds_secret(&doc("clouds: {lab: {auth: {username: u}}}")));
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovbmc-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const CLOUDS: &str = r#"
clouds:
  lab:
    auth:
      username: ovb
      project_name: ovb
      auth_url: http://127.0.0.1:15000
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: internalURL
  app:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example/v3/
      application_credential_id: "0123"
      application_credential_secret: 4567
    cacert: /etc/ssl/cloud.pem
"#;

    #[test]
    fn clouds_yaml_with_secure_yaml_merge() {
        let d = tmpdir("merge");
        std::fs::write(d.join("clouds.yaml"), CLOUDS).unwrap();
        std::fs::write(
            d.join("secure.yaml"),
            "clouds:\n  lab:\n    auth:\n      password: s3cret\n",
        )
        .unwrap();
        let env = env_of(&[]);
        let c = load_from(
            Some("lab"),
            &candidate_files("clouds", None, std::slice::from_ref(&d)),
            &candidate_files("secure", None, std::slice::from_ref(&d)),
            &env,
        )
        .unwrap();
        assert_eq!(c.auth_url, "http://127.0.0.1:15000/v3");
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, "internal");
        assert_eq!(
            c.auth,
            Auth::Password {
                user: UserRef::Name {
                    name: "ovb".into(),
                    domain: DomainRef::Name("Default".into())
                },
                password: Secret::new("s3cret"),
                project: ProjectRef::Name {
                    name: "ovb".into(),
                    domain: DomainRef::Name("Default".into())
                },
            }
        );
        // The password never shows in Debug output.
        assert!(!format!("{c:?}").contains("s3cret"));
        let a = load_from(
            Some("app"),
            &candidate_files("clouds", None, &[d]),
            &[],
            &env,
        )
        .unwrap();
        assert_eq!(a.auth_url, "https://keystone.example/v3");
        assert_eq!(a.cacert, Some(PathBuf::from("/etc/ssl/cloud.pem")));
        match a.auth {
            Auth::ApplicationCredential { id, name, secret } => {
                assert_eq!(id.as_deref(), Some("0123"));
                assert!(name.is_none());
                // A YAML number is accepted as the secret's text.
                assert_eq!(secret.expose(), "4567");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lookup_order_override_first_then_search_dirs() {
        let d1 = tmpdir("order1");
        let d2 = tmpdir("order2");
        let over = tmpdir("order-over").join("mine.yaml");
        std::fs::write(d1.join("clouds.yml"), CLOUDS.replace("RegionOne", "One")).unwrap();
        std::fs::write(d2.join("clouds.yaml"), CLOUDS.replace("RegionOne", "Two")).unwrap();
        let pw = env_of(&[]);
        let sec = |d: &Path| {
            std::fs::write(
                d.join("secure.yaml"),
                "clouds: {lab: {auth: {password: x}}}",
            )
            .unwrap();
        };
        sec(&d1);
        let dirs = vec![d1.clone(), d2.clone()];
        let secure = candidate_files("secure", None, &dirs);
        // d1 comes before d2: clouds.yml in d1 wins over clouds.yaml in d2.
        let c = load_from(
            Some("lab"),
            &candidate_files("clouds", None, &dirs),
            &secure,
            &pw,
        );
        assert_eq!(c.unwrap().region.as_deref(), Some("One"));
        // OS_CLIENT_CONFIG_FILE is tried before the search path.
        std::fs::write(&over, CLOUDS.replace("RegionOne", "Over")).unwrap();
        let files = candidate_files("clouds", Some(&over), &dirs);
        let c = load_from(Some("lab"), &files, &secure, &pw).unwrap();
        assert_eq!(c.region.as_deref(), Some("Over"));
        // A broken file is skipped, as openstacksdk does.
        std::fs::write(&over, "clouds: [unclosed").unwrap();
        let c = load_from(Some("lab"), &files, &secure, &pw).unwrap();
        assert_eq!(c.region.as_deref(), Some("One"));
        // Unknown cloud: the error names the clouds that exist.
        let e = load_from(Some("nope"), &files, &secure, &pw).unwrap_err();
        assert!(e.to_string().contains("lab"), "{e}");
    }

    #[test]
    fn search_dirs_follow_openstacksdk() {
        let env = env_of(&[("HOME", "/home/u")]);
        let dirs = search_dirs(&env);
        let tail: Vec<String> = dirs[1..].iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            tail,
            [
                "/home/u/.config/openstack",
                "/etc/xdg/openstack",
                "/etc/openstack"
            ]
        );
        let files = candidate_files("clouds", Some(Path::new("/x/c.yaml")), &dirs);
        assert_eq!(files[0], Path::new("/x/c.yaml"));
        assert!(files[1].ends_with("clouds.yaml"));
    }

    #[test]
    fn endpoint_overrides() {
        let d = tmpdir("override");
        std::fs::write(
            d.join("clouds.yaml"),
            "clouds:\n  nat:\n    auth: {auth_url: http://k:5000, username: u, password: p, \
             project_id: x}\n    compute_endpoint_override: http://10.0.0.1:8774/v2.1/%(project_id)s/\n    \
             image_endpoint: https://glance.example\n  bad:\n    auth: {auth_url: http://k:5000, \
             username: u, password: p, project_id: x}\n    compute_endpoint_override: nova:8774\n",
        )
        .unwrap();
        let files = candidate_files("clouds", None, &[d]);
        let c = load_from(Some("nat"), &files, &[], &env_of(&[])).unwrap();
        assert_eq!(
            c.compute_endpoint_override.as_deref(),
            Some("http://10.0.0.1:8774/v2.1/%(project_id)s")
        );
        assert_eq!(
            c.image_endpoint_override.as_deref(),
            Some("https://glance.example")
        );
        let e = load_from(Some("bad"), &files, &[], &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("compute_endpoint_override"), "{e}");
        // The OS_* analogue, as openstacksdk maps OS_FOO to the key foo.
        let env = env_of(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_ID", "abc"),
            ("OS_COMPUTE_ENDPOINT_OVERRIDE", "http://127.0.0.1:8774/v2.1"),
        ]);
        let c = load_from(None, &[], &[], &env).unwrap();
        assert_eq!(
            c.compute_endpoint_override.as_deref(),
            Some("http://127.0.0.1:8774/v2.1")
        );
        assert_eq!(c.image_endpoint_override, None);
    }

    #[test]
    fn os_environment() {
        let env = env_of(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_ID", "abc"),
            ("OS_REGION_NAME", "R"),
        ]);
        let c = load_from(None, &[], &[], &env).unwrap();
        assert_eq!(c.region.as_deref(), Some("R"));
        assert_eq!(c.interface, "public");
        assert_eq!(
            c.auth,
            Auth::Password {
                user: UserRef::Name {
                    name: "u".into(),
                    domain: DomainRef::Id("default".into())
                },
                password: Secret::new("p"),
                project: ProjectRef::Id("abc".into()),
            }
        );
        let env = env_of(&[
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "bmc"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
            ("OS_USERNAME", "u"),
            ("OS_USER_DOMAIN_NAME", "D"),
        ]);
        let c = load_from(None, &[], &[], &env).unwrap();
        assert!(matches!(
            c.auth,
            Auth::ApplicationCredential { name: Some(_), .. }
        ));
        // Missing pieces give a clear error, not a panic.
        let env = env_of(&[("OS_AUTH_URL", "http://k/v3"), ("OS_USERNAME", "u")]);
        let e = load_from(None, &[], &[], &env).unwrap_err().to_string();
        assert!(e.contains("password"), "{e}");
        let e = load_from(None, &[], &[], &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--os-cloud"), "{e}");
    }
}
