//! Virtual media on Nova without a volume: an insert fetches the image URL (streamed, at most
//! `vmedia_max_bytes`, HTTPS verified with the cloud's trust) and uploads it to Glance as an
//! ISO image marked as ovbmc's; a boot from `Cd` rescues the instance with that image (Nova API
//! reference, "Rescue Server": `rescue_image_ref`; with compute microversion 2.87 or later and
//! the image property `hw_rescue_device=cdrom`, Nova attaches it as a CD and keeps the
//! instance's own disks, "stable device rescue"); a boot from disk afterwards unrescues.
//! Eject (and the BMC leaving the fleet) deletes the Glance image.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Inner, Step, berr};
use crate::backend::{BackendError, InsertOptions, MediaState};
use crate::cloud::CloudError;
use crate::cloud::session::{Service, Session};
use ipmi_proto::machine::MachineError;

/// How often a web-download import's image is read while Glance fetches it.
const IMPORT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The Glance tag of every image ovbmc made for virtual media.
pub const TAG: &str = "ovbmc-vmedia";
/// The image property naming the instance the image was inserted for.
pub const INSTANCE_PROP: &str = "ovbmc_instance";
/// The image property naming the BMC (the instance's name).
pub const BMC_PROP: &str = "ovbmc_bmc";

/// The CD slot of one instance.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The URL inserted (or being inserted).
    url: Option<String>,
    /// The Glance image made from it, once uploaded.
    pub(super) image: Option<String>,
    inserted: bool,
    inserting: bool,
    /// The instance was rescued with [`Slot::image`] (by ovbmc, since it started).
    pub(super) rescued: bool,
}

impl Slot {
    pub(super) fn state(&self) -> MediaState {
        MediaState {
            image: self.url.clone(),
            inserted: self.inserted,
            write_protected: true,
            inserting: self.inserting,
        }
    }

    /// The image to boot from `Cd`, if one is inserted and ready.
    pub(super) fn bootable(&self) -> Option<String> {
        self.image
            .clone()
            .filter(|_| self.inserted && !self.inserting)
    }
}

/// Clears [`Slot::inserting`] however the insert ends.
struct Inserting<'a>(&'a Inner);

impl Drop for Inserting<'_> {
    fn drop(&mut self) {
        self.0.lock().media.inserting = false;
    }
}

/// `/v2/…` under the catalog's image URL (usually unversioned, sometimes ending in /v2).
async fn glance(session: &Session, path: &str) -> Result<String, CloudError> {
    let base = session.endpoint(Service::Image).await?;
    let base = base.trim_end_matches('/');
    Ok(if base.ends_with("/v2") {
        format!("{base}{path}")
    } else {
        format!("{base}/v2{path}")
    })
}

/// Delete a Glance image (gone already is fine).
async fn delete_image(session: &Session, id: &str) -> Result<(), CloudError> {
    let url = glance(session, &format!("/images/{id}")).await?;
    match session
        .call(
            "Glance image delete",
            Method::DELETE,
            Service::Image,
            &url,
            None,
        )
        .await
    {
        Ok(_) | Err(CloudError::Http { status: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Delete the virtual media images a previous run left for these instances (found by
/// [`TAG`] and [`INSTANCE_PROP`]): at start-up no CD is inserted, so none is in use.
pub async fn clean_stale(session: &Session, instances: &[String]) {
    let url = match glance(session, &format!("/images?tag={TAG}&limit=1000")).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("virtual media: stale image clean-up skipped: {e}");
            return;
        }
    };
    let list = match session
        .call("Glance image list", Method::GET, Service::Image, &url, None)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("virtual media: stale image clean-up skipped: {e}");
            return;
        }
    };
    for img in list["images"].as_array().into_iter().flatten() {
        let (Some(id), Some(inst)) = (img["id"].as_str(), img[INSTANCE_PROP].as_str()) else {
            continue;
        };
        if !instances.iter().any(|i| i == inst) {
            continue;
        }
        match delete_image(session, id).await {
            Ok(()) => tracing::info!(
                "virtual media: deleted image {id} left by an earlier run for instance {inst}"
            ),
            Err(e) => tracing::warn!("virtual media: stale image {id} not deleted: {e}"),
        }
    }
}

impl Inner {
    pub(super) fn media_state(&self) -> MediaState {
        self.lock().media.state()
    }

    pub(super) async fn insert_media(
        self: &Arc<Self>,
        url: String,
        options: InsertOptions,
    ) -> Result<(), BackendError> {
        let old = {
            let mut l = self.lock();
            if l.media.inserting {
                return Err(berr(
                    MachineError::Busy,
                    format!("{}: a virtual media insert is in progress", self.name),
                ));
            }
            let old = l.media.image.take();
            l.media = Slot {
                url: Some(url.clone()),
                inserting: true,
                ..Slot::default()
            };
            old
        };
        let _inserting = Inserting(self);
        if let Some(old) = old
            && let Err(e) = delete_image(&self.session, &old).await
        {
            tracing::warn!(
                "{}: virtual media: old image {old} not deleted: {e}",
                self.name
            );
        }
        match self.upload(&url).await {
            Ok(image) => {
                let mut l = self.lock();
                l.media.image = Some(image);
                l.media.inserted = options.inserted;
                Ok(())
            }
            Err(message) => {
                self.lock().media = Slot::default();
                Err(berr(
                    MachineError::Failed,
                    format!("{}: {message}", self.name),
                ))
            }
        }
    }

    /// Fetch `url` into a new Glance image; its id, or what went wrong (the half-made image
    /// deleted). With `--vmedia-import web-download`, Glance is asked to fetch it first, and
    /// an upload follows only if that cannot be done.
    async fn upload(&self, url: &str) -> Result<String, String> {
        let shown = crate::redfish::media_url_shown(url);
        if self.opts.vmedia_import == crate::cloud::VmediaImport::WebDownload {
            let id = self.create_image(&shown).await?;
            match self.web_download(&id, url, &shown).await {
                Ok(()) => {
                    tracing::info!(
                        "{}: virtual media {shown} imported by Glance (web-download) into \
                         image {id}",
                        self.name
                    );
                    return Ok(id);
                }
                Err(why) => {
                    tracing::warn!(
                        "{}: virtual media {shown}: Glance's web-download import did not \
                         work ({why}); uploading it instead",
                        self.name
                    );
                    if let Err(e) = delete_image(&self.session, &id).await {
                        tracing::warn!(
                            "{}: virtual media: image {id} of a failed import not deleted: {e}",
                            self.name
                        );
                    }
                }
            }
        }
        let id = self.create_image(&shown).await?;
        match self.fill(&id, url, &shown).await {
            Ok(()) => {
                tracing::info!(
                    "{}: virtual media {shown} uploaded to Glance image {id}",
                    self.name
                );
                Ok(id)
            }
            Err(why) => {
                if let Err(e) = delete_image(&self.session, &id).await {
                    tracing::warn!(
                        "{}: virtual media: image {id} of a failed insert not deleted: {e}",
                        self.name
                    );
                }
                Err(why)
            }
        }
    }

    /// Glance imports `url` into image `id` itself ("Interoperable image import", method
    /// `web-download`: `POST /v2/images/{id}/import`), where the cloud offers it (`GET
    /// /v2/info/import`). Done when the image is `active`; failed when Glance records the
    /// import as failed (`os_glance_failed_import`, the image back to `queued`), the image is
    /// `killed` or gone, or the limits are passed (size, `vmedia_timeout`).
    async fn web_download(&self, id: &str, url: &str, shown: &str) -> Result<(), String> {
        let info = glance(&self.session, "/info/import")
            .await
            .map_err(|e| e.to_string())?;
        let offered: Value = self
            .session
            .call(
                "Glance import methods",
                Method::GET,
                Service::Image,
                &info,
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
        let methods = offered["import-methods"]["value"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !methods.iter().any(|m| m == "web-download") {
            return Err(format!(
                "this Glance does not offer it (import methods: {})",
                Value::Array(methods)
            ));
        }
        let import = glance(&self.session, &format!("/images/{id}/import"))
            .await
            .map_err(|e| e.to_string())?;
        self.session
            .call(
                &format!("Glance image import for {}", self.name),
                Method::POST,
                Service::Image,
                &import,
                Some(&json!({ "method": { "name": "web-download", "uri": url } })),
            )
            .await
            .map_err(|e| e.to_string())?;
        let show = glance(&self.session, &format!("/images/{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let until = tokio::time::Instant::now() + self.opts.vmedia_timeout;
        loop {
            let v: Value = self
                .session
                .call("Glance image", Method::GET, Service::Image, &show, None)
                .await
                .map_err(|e| e.to_string())?;
            let failed = v["os_glance_failed_import"].as_str().unwrap_or_default();
            // Back to (or still) queued: a failed import reverts the image to queued and may
            // leave `os_glance_failed_import` empty with a single store, so the import task
            // says (`GET /v2/images/{id}/tasks`, Image API 2.12).
            if v["status"] == "queued"
                && let Some(why) = self.import_failed(id).await
            {
                return Err(format!("Glance's import task failed ({why})"));
            }
            match v["status"].as_str() {
                _ if !failed.is_empty() => {
                    return Err(format!("Glance recorded the import as failed ({failed})"));
                }
                Some("active") => {
                    let size = v["size"].as_u64().unwrap_or(0);
                    let max = self.opts.vmedia_max_bytes;
                    if size > max {
                        return Err(too_large(shown, max, Some(size)));
                    }
                    return Ok(());
                }
                Some(s @ ("killed" | "deleted" | "pending_delete")) => {
                    return Err(format!("the image is {s}"));
                }
                Some(_) | None if tokio::time::Instant::now() >= until => {
                    return Err(format!(
                        "not active after {} s (vmedia_timeout)",
                        self.opts.vmedia_timeout.as_secs()
                    ));
                }
                _ => tokio::time::sleep(IMPORT_POLL).await,
            }
        }
    }

    /// The message of image `id`'s last import task if it failed; None while it runs or
    /// succeeded, or where Glance has no tasks API for images (older than 2.12).
    async fn import_failed(&self, id: &str) -> Option<String> {
        let url = glance(&self.session, &format!("/images/{id}/tasks"))
            .await
            .ok()?;
        let v: Value = self
            .session
            .call(
                "Glance image tasks",
                Method::GET,
                Service::Image,
                &url,
                None,
            )
            .await
            .ok()?;
        // The latest by creation (an image imported twice has two).
        let tasks = v["tasks"].as_array()?;
        let last = tasks
            .iter()
            .max_by_key(|t| t["created_at"].as_str().unwrap_or_default().to_string())?;
        (last["status"] == "failure").then(|| {
            last["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or("no message")
                .to_string()
        })
    }

    /// A new, empty Glance image for virtual media `shown`: its id.
    async fn create_image(&self, shown: &str) -> Result<String, String> {
        let create = glance(&self.session, "/images")
            .await
            .map_err(|e| e.to_string())?;
        // Glance "Create image": extra properties are strings; `hw_rescue_device` is what Nova's
        // stable device rescue reads (nova/virt/libvirt/driver.py, 2.87+).
        let body = json!({
            "name": format!("ovbmc-vmedia-{}", self.name),
            "disk_format": "iso",
            "container_format": "bare",
            "visibility": "private",
            "tags": [TAG],
            "hw_rescue_device": "cdrom",
            (BMC_PROP): self.name,
            (INSTANCE_PROP): self.id,
            "ovbmc_source": shown,
        });
        let img = self
            .session
            .call(
                &format!("Glance image create for {}", self.name),
                Method::POST,
                Service::Image,
                &create,
                Some(&body),
            )
            .await
            .map_err(|e| format!("virtual media {shown}: {e}"))?;
        img["id"].as_str().map(str::to_string).ok_or_else(|| {
            format!("virtual media {shown}: Glance image create answered without an id")
        })
    }

    /// Stream the image at `url` into Glance image `id`.
    async fn fill(&self, id: &str, url: &str, shown: &str) -> Result<(), String> {
        let max = self.opts.vmedia_max_bytes;
        let timeout = self.opts.vmedia_timeout;
        let r = self
            .session
            .http()
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("fetching {shown}: {}", chain(&e.without_url())))?;
        if !r.status().is_success() {
            return Err(format!("fetching {shown}: HTTP {}", r.status()));
        }
        let declared = r.content_length();
        if let Some(n) = declared
            && n > max
        {
            return Err(too_large(shown, max, Some(n)));
        }
        let over = Arc::new(AtomicBool::new(false));
        let flag = over.clone();
        let mut seen: u64 = 0;
        // Counted as it streams: a server that sends more than it declared (or declares
        // nothing) is cut off at the limit too.
        let stream = r.bytes_stream().map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > max {
                flag.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("virtual media image too large").into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(chunk)
        });
        let put = glance(&self.session, &format!("/images/{id}/file"))
            .await
            .map_err(|e| e.to_string())?;
        let sent = self
            .session
            .send_stream(
                &format!("Glance upload of {shown} for {}", self.name),
                Method::PUT,
                &put,
                "application/octet-stream",
                (reqwest::Body::wrap_stream(stream), declared),
                timeout,
            )
            .await;
        if over.load(Ordering::Relaxed) {
            return Err(too_large(shown, max, None));
        }
        sent.map_err(|e| e.to_string())?;
        // Glance answers 204 once the data is stored; the image is then `active`.
        let show = glance(&self.session, &format!("/images/{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = self
            .session
            .call("Glance image", Method::GET, Service::Image, &show, None)
            .await
            .map_err(|e| e.to_string())?;
        match v["status"].as_str() {
            Some("active") => Ok(()),
            other => Err(format!(
                "virtual media {shown}: Glance image {id} is {} after the upload",
                other.unwrap_or("of unknown status")
            )),
        }
    }

    pub(super) async fn eject_media(&self) -> Result<(), BackendError> {
        let (image, rescued) = {
            let mut l = self.lock();
            if l.media.inserting {
                return Err(berr(
                    MachineError::Busy,
                    format!("{}: a virtual media insert is in progress", self.name),
                ));
            }
            let image = l.media.image.take();
            let rescued = std::mem::take(&mut l.media.rescued);
            l.media = Slot::default();
            (image, rescued)
        };
        if rescued {
            // The instance runs the ejected image: back to its own disk, as a machine whose
            // CD is pulled is reset onto its disk by Ironic anyway.
            match self.server(None).await {
                Ok((_, s)) if s.status == "RESCUE" && s.task_state.is_none() => {
                    match self.act(Step::Unrescue, None).await {
                        Ok(()) => {
                            tracing::info!("{}: virtual media ejected: unrescue sent", self.name)
                        }
                        Err(e) => {
                            tracing::warn!("{}: virtual media eject: unrescue: {e}", self.name)
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(id) = image {
            if let Err(e) = delete_image(&self.session, &id).await {
                // Kept for a later attempt (the next eject or the BMC's removal).
                tracing::warn!(
                    "{}: virtual media ejected, but Glance image {id} not deleted: {e}",
                    self.name
                );
                return Err(self.fail("virtual media eject", e));
            }
            tracing::info!(
                "{}: virtual media ejected, Glance image {id} deleted",
                self.name
            );
        }
        Ok(())
    }

    /// The BMC left the fleet: delete its image (the instance is left as it is).
    pub(super) async fn retire(&self) {
        let image = self.lock().media.image.take();
        if let Some(id) = image {
            match delete_image(&self.session, &id).await {
                Ok(()) => tracing::info!(
                    "{}: removed from the fleet: virtual media image {id} deleted",
                    self.name
                ),
                Err(e) => tracing::warn!(
                    "{}: removed from the fleet: virtual media image {id} not deleted: {e}",
                    self.name
                ),
            }
        }
    }
}

fn too_large(shown: &str, max: u64, declared: Option<u64>) -> String {
    let mib = |n: u64| n / (1024 * 1024);
    match declared {
        Some(n) => format!(
            "virtual media {shown}: {} MiB is larger than the limit of {} MiB (vmedia_max_mib)",
            mib(n),
            mib(max)
        ),
        None => format!(
            "virtual media {shown}: larger than the limit of {} MiB (vmedia_max_mib)",
            mib(max)
        ),
    }
}

fn chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
