//! Virtual media: `Managers/{id}/VirtualMedia/Cd` (VirtualMedia v1_6_0), the machine's CD
//! slot ([`Machine::media_state`](crate::backend::Machine::media_state)). Inserted with the
//! `#VirtualMedia.InsertMedia` action or a PATCH of `Image`/`Inserted` (sushy does the PATCH
//! when the actions are absent, sushy/resources/manager/virtual_media.py), ejected with
//! `#VirtualMedia.EjectMedia` or a PATCH of `Image: null` / `Inserted: false`. An insert can
//! take minutes (the Nova backend fetches the ISO and uploads it to Glance), so it runs as a
//! task ([`super::tasks`]): `202 Accepted` with the task monitor in `Location`.
//!
//! The media is served under the Manager only: Ironic looks for VirtualMedia under the System
//! first and falls back to the Managers in `Links.ManagedBy` (ironic/drivers/modules/redfish/
//! boot.py), and one resource at one URI keeps the validator's view simple.

use bytes::Bytes;
use hyper::header::{LOCATION, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::{Answer, Deadline, Face, System, Who, busy, error, forbidden, json_ok, json_response};
use super::{change, no_content, not_found, parse_json, stale, tasks};
use crate::backend::{InsertOptions, MediaState};

/// The one slot's `Id`.
pub const CD: &str = "Cd";
const INSERT: &str = "VirtualMedia.InsertMedia";
const EJECT: &str = "VirtualMedia.EjectMedia";
/// `TransferMethod` values accepted. Either way ovbmc copies the image before it is
/// bootable, which is what `Upload` means (VirtualMedia v1_3_0 TransferMethod).
const METHODS: [&str; 2] = ["Stream", "Upload"];
/// `TransferProtocolType` values accepted: what the image URL may be.
const PROTOCOLS: [&str; 2] = ["HTTP", "HTTPS"];
/// The longest `Image` accepted (a URL; Ironic's are under 200 characters).
const MAX_URL: usize = 2048;

/// The methods a virtual media path takes (`None`: not one of its paths).
pub fn allowed(path: &str) -> Option<&'static [Method]> {
    const GET: &[Method] = &[Method::GET, Method::HEAD];
    const GET_PATCH: &[Method] = &[Method::GET, Method::HEAD, Method::PATCH];
    const POST: &[Method] = &[Method::POST];
    let rest = path.strip_prefix("/redfish/v1/")?;
    let seg: Vec<&str> = rest.split('/').collect();
    match seg.as_slice() {
        ["Managers", _, "VirtualMedia"] => Some(GET),
        ["Managers", _, "VirtualMedia", CD] => Some(GET_PATCH),
        ["Managers", _, "VirtualMedia", CD, "Actions", INSERT | EJECT] => Some(POST),
        _ => None,
    }
}

fn base(id: &str) -> String {
    format!("/redfish/v1/Managers/{id}/VirtualMedia")
}

/// The collection (one member, the CD).
pub fn collection(id: &str) -> Value {
    super::resources::collection(
        "VirtualMediaCollection",
        "Virtual Media Collection",
        &base(id),
        std::iter::once(format!("{}/{CD}", base(id))),
    )
}

/// The CD slot.
pub fn document(id: &str, m: &MediaState) -> Value {
    let uri = format!("{}/{CD}", base(id));
    let protocol = m.image.as_deref().and_then(|u| {
        let scheme = u.split_once("://")?.0.to_ascii_uppercase();
        PROTOCOLS.contains(&scheme.as_str()).then_some(scheme)
    });
    let image_name = m
        .image
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
        .filter(|n| !n.is_empty());
    json!({
        "@odata.id": uri,
        "@odata.type": "#VirtualMedia.v1_6_0.VirtualMedia",
        "Id": CD,
        "Name": "Virtual CD",
        // Ironic asks for a CD and takes DVD media too (redfish/boot.py, _insert_vmedia).
        "MediaTypes": ["CD", "DVD"],
        "Image": m.image,
        "ImageName": image_name,
        "Inserted": m.inserted,
        "WriteProtected": true,
        "ConnectedVia": if m.image.is_some() { "URI" } else { "NotConnected" },
        "TransferMethod": "Upload",
        "TransferProtocolType": protocol,
        "Status": {
            "State": "Enabled",
            "Health": "OK",
        },
        "Actions": {
            "#VirtualMedia.InsertMedia": {
                "target": format!("{uri}/Actions/{INSERT}"),
                "TransferMethod@Redfish.AllowableValues": METHODS,
                "TransferProtocolType@Redfish.AllowableValues": PROTOCOLS,
            },
            "#VirtualMedia.EjectMedia": {
                "target": format!("{uri}/Actions/{EJECT}"),
            },
        },
    })
}

/// What a body asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Insert the image at the URL.
    Insert(String, InsertOptions),
    /// Eject.
    Eject,
}

/// A 4xx answer to a virtual media request, logged: which message and which parameter, never
/// the value (an `Image` URL may carry a signature).
fn refused(status: StatusCode, id: &str, message: &str, args: &[&str]) -> Answer {
    let about = args
        .iter()
        .rev()
        .find(|a| **a != INSERT && **a != EJECT)
        .copied()
        .unwrap_or("the body");
    info!(
        status = status.as_u16(),
        "redfish: virtual media request refused: {}.{id} ({about})",
        super::BASE
    );
    error(status, id, message, args)
}

/// Whether the body is an action's parameters or a PATCH's properties: the Base messages
/// differ (`ActionParameter…` against `Property…`).
#[derive(Clone, Copy)]
enum Form {
    Action,
    Patch,
}

fn bad(form: Form, what: &str, name: &str, value: &Value) -> Answer {
    let value = match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    // The Base registry has each of the three faults twice, worded for an action's parameter
    // and for a property: `{ActionParameter,Property}Value{TypeError,NotInList,FormatError}`.
    let (noun, prefix, subject) = match form {
        Form::Action => (
            "parameter",
            "ActionParameter",
            format!("the parameter {name} in the action {INSERT}"),
        ),
        Form::Patch => ("property", "Property", format!("the property {name}")),
    };
    let (fault, tail) = match what {
        "type" => (
            "ValueTypeError",
            format!("is not a type that the {noun} can accept."),
        ),
        "list" => (
            "ValueNotInList",
            "is not in the list of acceptable values.".to_string(),
        ),
        _ => (
            "ValueFormatError",
            format!("is not a format that the {noun} can accept."),
        ),
    };
    let args: &[&str] = match form {
        Form::Action => &[&value, name, INSERT],
        Form::Patch => &[&value, name],
    };
    refused(
        StatusCode::BAD_REQUEST,
        &format!("{prefix}{fault}"),
        &format!("The value '{value}' for {subject} {tail}"),
        args,
    )
}

/// The image URL: absolute http or https with a host (ovbmc fetches it itself).
fn check_url(form: Form, v: &Value) -> Result<String, Answer> {
    let Some(s) = v.as_str() else {
        return Err(bad(form, "type", "Image", v));
    };
    let ok = s.len() <= MAX_URL
        && reqwest::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        return Err(bad(form, "format", "Image", v));
    }
    Ok(s.to_string())
}

fn one_of(form: Form, name: &str, v: &Value, allowed: &[&str]) -> Result<String, Answer> {
    match v.as_str() {
        None => Err(bad(form, "type", name, v)),
        Some(s) if allowed.contains(&s) => Ok(s.to_string()),
        Some(_) => Err(bad(form, "list", name, v)),
    }
}

/// The change a body (InsertMedia parameters, or PATCH properties of the CD whose present
/// document is `current`) asks for.
fn parse(form: Form, body: &Value, current: &Value) -> Result<Change, Answer> {
    let mut image: Option<&Value> = None;
    let mut opts = InsertOptions::default();
    let mut inserted_given = None;
    let mut protocol = None;
    for (k, v) in body.as_object().into_iter().flatten() {
        match k.as_str() {
            "Image" => image = Some(v),
            "Inserted" => {
                let b = v.as_bool().ok_or_else(|| bad(form, "type", k, v))?;
                opts.inserted = b;
                inserted_given = Some(b);
            }
            "WriteProtected" => {
                // A CD is read-only: `false` cannot be honoured, so it is refused rather
                // than ignored.
                match v.as_bool() {
                    None => return Err(bad(form, "type", k, v)),
                    Some(false) => return Err(bad(form, "list", k, v)),
                    Some(true) => {}
                }
            }
            "TransferMethod" => {
                one_of(form, k, v, &METHODS)?;
            }
            "TransferProtocolType" => protocol = Some(one_of(form, k, v, &PROTOCOLS)?),
            k if k.starts_with('@') || k.contains("@odata.") || k.contains("@Redfish.") => {}
            "UserName" | "Password" if matches!(form, Form::Action) => {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "ActionParameterNotSupported",
                    &format!(
                        "The parameter {k} for the action {INSERT} is not supported on the \
                         target resource."
                    ),
                    &[k, INSERT],
                ));
            }
            k => {
                return Err(match (form, current.get(k)) {
                    (Form::Action, _) => refused(
                        StatusCode::BAD_REQUEST,
                        "ActionParameterUnknown",
                        &format!(
                            "The action {INSERT} was submitted with the invalid parameter {k}."
                        ),
                        &[INSERT, k],
                    ),
                    (Form::Patch, Some(_)) => refused(
                        StatusCode::BAD_REQUEST,
                        "PropertyNotWritable",
                        &format!(
                            "The property {k} is a read-only property and cannot be assigned a \
                             value."
                        ),
                        &[k],
                    ),
                    (Form::Patch, None) => refused(
                        StatusCode::BAD_REQUEST,
                        "PropertyUnknown",
                        &format!(
                            "The property {k} is not in the list of valid properties for the \
                             resource."
                        ),
                        &[k],
                    ),
                });
            }
        }
    }
    match (form, image) {
        (Form::Action, None) => Err(refused(
            StatusCode::BAD_REQUEST,
            "ActionParameterMissing",
            &format!(
                "The action {INSERT} requires the parameter Image to be present in the request body."
            ),
            &[INSERT, "Image"],
        )),
        // sushy's PATCH eject: {"Image": null, "Inserted": false}.
        (Form::Patch, Some(Value::Null)) | (Form::Patch, None) if inserted_given == Some(false) => {
            Ok(Change::Eject)
        }
        (Form::Patch, Some(Value::Null)) => Ok(Change::Eject),
        (Form::Patch, None) => Err(refused(
            StatusCode::BAD_REQUEST,
            "NoOperation",
            "The request body submitted contain no data to act upon and no changes to the \
             resource took place.",
            &[],
        )),
        (_, Some(v)) => {
            let url = check_url(form, v)?;
            if let Some(p) = protocol
                && !url.to_ascii_uppercase().starts_with(&format!("{p}://"))
            {
                return Err(bad(form, "format", "Image", v));
            }
            Ok(Change::Insert(url, opts))
        }
    }
}

/// A URL fit for the log: no user information, no query (a signed URL's signature is a
/// credential).
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let q = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            if q { format!("{u}?…") } else { u.to_string() }
        }
        Err(_) => "<not a URL>".into(),
    }
}

impl Face {
    /// The virtual media requests under `Managers/{id}/VirtualMedia`.
    pub(super) async fn media(
        &self,
        req: &Request<()>,
        who: &Who,
        id: &str,
        rest: &[&str],
        body: Option<Bytes>,
        due: Deadline,
    ) -> Answer {
        let path = format!("{}/{}", base(id), rest.join("/"));
        let Some((s, role)) = who.system(id) else {
            return not_found(&path);
        };
        let Some(state) = s.machine.media_state() else {
            return not_found(&path);
        };
        match (rest, req.method().clone()) {
            ([], _) => json_ok(&collection(id)),
            ([CD], Method::PATCH) => {
                if !role.may_configure() {
                    return forbidden();
                }
                let current = document(id, &state);
                if let Some(refused) = stale(req.headers(), &current) {
                    return refused;
                }
                let v = match parse_json(body) {
                    Ok(v) => v,
                    Err(a) => return a,
                };
                match parse(Form::Patch, &v, &current) {
                    Ok(Change::Insert(url, o)) => self.insert(who, s, url, o),
                    Ok(Change::Eject) => match self.eject(who, s, due).await {
                        Ok(()) => self.media_document(s),
                        Err(a) => a,
                    },
                    Err(a) => a,
                }
            }
            ([CD], _) => json_ok(&document(id, &state)),
            ([CD, "Actions", action], _) => {
                if !role.may_configure() {
                    return forbidden();
                }
                // EjectMedia takes no parameters; sushy posts it with no body at all.
                let empty = body
                    .as_ref()
                    .is_none_or(|b| b.iter().all(u8::is_ascii_whitespace));
                let v = if empty {
                    json!({})
                } else {
                    match parse_json(body) {
                        Ok(v) => v,
                        Err(a) => return a,
                    }
                };
                if *action == EJECT {
                    if let Some(k) = v
                        .as_object()
                        .and_then(|o| o.keys().find(|k| !k.starts_with('@')))
                    {
                        return refused(
                            StatusCode::BAD_REQUEST,
                            "ActionParameterUnknown",
                            &format!(
                                "The action {EJECT} was submitted with the invalid parameter {k}."
                            ),
                            &[EJECT, k],
                        );
                    }
                    return match self.eject(who, s, due).await {
                        Ok(()) => no_content(),
                        Err(a) => a,
                    };
                }
                match parse(Form::Action, &v, &document(id, &state)) {
                    Ok(Change::Insert(url, o)) => self.insert(who, s, url, o),
                    Ok(Change::Eject) => no_content(),
                    Err(a) => a,
                }
            }
            _ => not_found(&path),
        }
    }

    fn media_document(&self, s: &System) -> Answer {
        match s.machine.media_state() {
            Some(m) => json_ok(&document(&s.id, &m)),
            None => not_found(&base(&s.id)),
        }
    }

    /// Start an insert as a task: 202 with the monitor in `Location` and the Task as body.
    fn insert(&self, who: &Who, s: &System, url: String, options: InsertOptions) -> Answer {
        if s.machine.media_state().is_some_and(|m| m.inserting) {
            // One insert at a time per slot (the backend refuses a second one too).
            return busy();
        }
        let id = self.inner.tasks.start(
            format!("Insert {} into the CD of {}", shown(&url), s.name),
            &s.id,
        );
        info!(system = %s.name, user = %who.user, image = %shown(&url), task = %id,
              "redfish: virtual media insert started");
        let m = s.machine.clone();
        let face = self.clone();
        let name = s.name.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let r = m.insert_media(url.clone(), options).await;
            match &r {
                Ok(()) => info!(system = %name, image = %shown(&url), task = %task_id,
                                "redfish: virtual media inserted"),
                Err(e) => warn!(system = %name, image = %shown(&url), task = %task_id,
                                "redfish: virtual media insert failed: {e}"),
            }
            face.inner.tasks.finish(&task_id, r.map_err(|e| e.message));
        });
        let Some(t) = self.inner.tasks.get(&id) else {
            return super::internal();
        };
        let mut r = json_response(StatusCode::ACCEPTED, &tasks::task(&t), false);
        if let Ok(l) = hyper::header::HeaderValue::from_str(&tasks::monitor(&id)) {
            r.headers_mut().insert(LOCATION, l);
        }
        r.headers_mut()
            .insert(RETRY_AFTER, hyper::header::HeaderValue::from(1u32));
        r
    }

    async fn eject(&self, who: &Who, s: &System, due: Deadline) -> Result<(), Answer> {
        let had = s.machine.media_state().and_then(|m| m.image);
        let m = &s.machine;
        let attempt = || {
            let m = m.clone();
            async move { m.eject_media().await }
        };
        change(due, "eject", &s.name, attempt).await?;
        if let Some(url) = had {
            info!(system = %s.name, user = %who.user, image = %shown(&url),
                  "redfish: virtual media ejected");
        }
        Ok(())
    }

    /// The TaskService requests.
    pub(super) fn task_service(&self, who: &Who, rest: &[&str]) -> Answer {
        let path = format!("/redfish/v1/TaskService/{}", rest.join("/"));
        let mine = |t: &tasks::Task| who.system(&t.system).is_some();
        match rest {
            [] => json_ok(&tasks::service()),
            ["Tasks"] => json_ok(&super::resources::collection(
                "TaskCollection",
                "Task Collection",
                tasks::TASKS,
                self.inner
                    .tasks
                    .list()
                    .into_iter()
                    .filter(mine)
                    .map(|t| format!("{}/{}", tasks::TASKS, t.id)),
            )),
            ["Tasks", id] => match self.inner.tasks.get(id).filter(mine) {
                Some(t) => json_ok(&tasks::task(&t)),
                None => not_found(&path),
            },
            // DSP0266 §13.2: 202 while the task runs, then the outcome (here: the Task).
            ["TaskMonitors", id] => match self.inner.tasks.get(id).filter(mine) {
                Some(t) if t.state == tasks::State::Running => {
                    let mut r = json_response(StatusCode::ACCEPTED, &tasks::task(&t), false);
                    if let Ok(l) = hyper::header::HeaderValue::from_str(&tasks::monitor(id)) {
                        r.headers_mut().insert(LOCATION, l);
                    }
                    r.headers_mut()
                        .insert(RETRY_AFTER, hyper::header::HeaderValue::from(1u32));
                    r
                }
                Some(t) => json_response(StatusCode::OK, &tasks::task(&t), false),
                None => not_found(&path),
            },
            _ => not_found(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur() -> Value {
        document("x", &MediaState::default())
    }

    fn status(r: Result<Change, Answer>) -> Result<Change, u16> {
        r.map_err(|a| a.status().as_u16())
    }

    #[test]
    fn insert_bodies() {
        let ok = |b: Value| status(parse(Form::Action, &b, &cur()));
        assert_eq!(
            ok(json!({"Image": "http://h:8080/a.iso"})),
            Ok(Change::Insert(
                "http://h:8080/a.iso".into(),
                InsertOptions::default()
            ))
        );
        assert!(
            ok(
                json!({"Image": "https://h/a.iso", "Inserted": true, "WriteProtected": true,
            "TransferMethod": "Stream", "TransferProtocolType": "HTTPS"})
            )
            .is_ok()
        );
        for b in [
            json!({}),
            json!({"Image": 3}),
            json!({"Image": "nfs://h/a.iso"}),
            json!({"Image": "/a.iso"}),
            json!({"Image": "http://h/a.iso", "TransferProtocolType": "HTTPS"}),
            json!({"Image": "http://h/a.iso", "TransferProtocolType": "NFS"}),
            json!({"Image": "http://h/a.iso", "WriteProtected": false}),
            json!({"Image": "http://h/a.iso", "Inserted": "yes"}),
            json!({"Image": "http://h/a.iso", "UserName": "u"}),
            json!({"Image": "http://h/a.iso", "Nope": 1}),
        ] {
            assert_eq!(ok(b.clone()), Err(400), "{b}");
        }
    }

    #[test]
    fn patch_bodies() {
        let p = |b: Value| status(parse(Form::Patch, &b, &cur()));
        assert_eq!(
            p(json!({"Image": null, "Inserted": false})),
            Ok(Change::Eject)
        );
        assert_eq!(p(json!({"Inserted": false})), Ok(Change::Eject));
        assert!(matches!(
            p(json!({"Image": "http://h/a.iso", "Inserted": true, "WriteProtected": true})),
            Ok(Change::Insert(..))
        ));
        assert_eq!(p(json!({"MediaTypes": ["CD"]})), Err(400));
        assert_eq!(p(json!({})), Err(400));
    }

    #[test]
    fn urls_in_logs_lose_credentials_and_queries() {
        assert_eq!(
            shown("http://u:p@h:81/x.iso?temp_url_sig=abc"),
            "http://h:81/x.iso?…"
        );
        assert_eq!(shown("nope"), "<not a URL>");
    }

    #[test]
    fn the_document_follows_the_slot() {
        let m = MediaState {
            image: Some("https://h/boot-1.iso".into()),
            inserted: true,
            write_protected: true,
            inserting: false,
        };
        let v = document("x", &m);
        assert_eq!(v["ImageName"], "boot-1.iso");
        assert_eq!(v["TransferProtocolType"], "HTTPS");
        assert_eq!(v["ConnectedVia"], "URI");
        let v = cur();
        assert_eq!(v["Image"], Value::Null);
        assert_eq!(v["ConnectedVia"], "NotConnected");
    }
}
