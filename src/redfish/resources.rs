//! The documents the Redfish face serves, and the checks of what clients send (PATCH of a
//! System's `Boot`, the `Reset` action). Schema versions are ones in DMTF's published CSDL
//! (../shared/redfish/csdl), named in `$metadata`.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::auth::Role;
use crate::backend::{BootFlags, PowerAction, PowerState};
use ipmi_proto::machine::BootDevice;

/// The sessions collection.
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// The predefined roles (DSP0266 §13.2.5).
pub const ROLES: [Role; 3] = [Role::Administrator, Role::Operator, Role::ReadOnly];

const GET: &[Method] = &[Method::GET, Method::HEAD];
const GET_PATCH: &[Method] = &[Method::GET, Method::HEAD, Method::PATCH];
const GET_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const GET_DELETE: &[Method] = &[Method::GET, Method::HEAD, Method::DELETE];
const POST: &[Method] = &[Method::POST];

/// The methods a path takes (`None`: no such resource). Existence of a member is checked
/// later, against what the caller may see.
pub fn allowed(path: &str) -> Option<&'static [Method]> {
    let rest = path.strip_prefix("/redfish/v1/")?;
    let seg: Vec<&str> = rest.split('/').collect();
    Some(match seg.as_slice() {
        ["Systems"] | ["Managers"] | ["Chassis"] | ["Managers", _] | ["Chassis", _] => GET,
        ["Systems", _] => GET_PATCH,
        ["Systems", _, "Actions", "ComputerSystem.Reset"] => POST,
        ["Systems", _, "EthernetInterfaces"] | ["Systems", _, "EthernetInterfaces", _] => GET,
        ["SessionService"] | ["AccountService"] => GET,
        ["SessionService", "Sessions"] => GET_POST,
        ["SessionService", "Sessions", _] => GET_DELETE,
        ["AccountService", "Accounts" | "Roles"] | ["AccountService", "Accounts" | "Roles", _] => {
            GET
        }
        _ => return None,
    })
}

fn link(p: &str) -> Value {
    json!({ "@odata.id": p })
}

fn ok() -> Value {
    json!({ "State": "Enabled", "Health": "OK" })
}

/// The service root.
pub fn service_root(uuid: &str) -> Value {
    json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "Id": "RootService",
        "Name": "ovbmc Redfish Service",
        "RedfishVersion": "1.6.0",
        "UUID": uuid,
        "Product": "ovbmc",
        "Vendor": "ovbmc",
        "Systems": link("/redfish/v1/Systems"),
        "Chassis": link("/redfish/v1/Chassis"),
        "Managers": link("/redfish/v1/Managers"),
        "SessionService": link("/redfish/v1/SessionService"),
        "AccountService": link("/redfish/v1/AccountService"),
        // The property is `Tasks` (ServiceRoot v1_0_0, URISegment TaskService); sushy reads it
        // there too (sushy/main.py, `_task_service_path`).
        "Tasks": link("/redfish/v1/TaskService"),
        "Links": { "Sessions": link(SESSIONS) },
    })
}

/// The OData service document (DSP0266 §8.4.2): the service root's top-level resources.
pub fn odata() -> Value {
    let s = |name: &str, url: &str| json!({ "name": name, "kind": "Singleton", "url": url });
    json!({
        "@odata.context": "/redfish/v1/$metadata",
        "value": [
            s("Service", "/redfish/v1/"),
            s("Systems", "/redfish/v1/Systems"),
            s("Chassis", "/redfish/v1/Chassis"),
            s("Managers", "/redfish/v1/Managers"),
            s("SessionService", "/redfish/v1/SessionService"),
            s("AccountService", "/redfish/v1/AccountService"),
            s("Tasks", "/redfish/v1/TaskService"),
            s("Sessions", SESSIONS),
        ],
    })
}

/// The schemas the documents use: (file, namespaces included).
const SCHEMAS: &[(&str, &[&str])] = &[
    ("ServiceRoot_v1", &["ServiceRoot", "ServiceRoot.v1_15_0"]),
    ("ComputerSystemCollection_v1", &["ComputerSystemCollection"]),
    (
        "ComputerSystem_v1",
        &["ComputerSystem", "ComputerSystem.v1_20_0"],
    ),
    // A System's EthernetInterfaces (super::ethernet).
    (
        "EthernetInterfaceCollection_v1",
        &["EthernetInterfaceCollection"],
    ),
    (
        "EthernetInterface_v1",
        &["EthernetInterface", "EthernetInterface.v1_12_0"],
    ),
    ("ManagerCollection_v1", &["ManagerCollection"]),
    ("Manager_v1", &["Manager", "Manager.v1_15_0"]),
    ("ChassisCollection_v1", &["ChassisCollection"]),
    ("Chassis_v1", &["Chassis", "Chassis.v1_21_0"]),
    (
        "SessionService_v1",
        &["SessionService", "SessionService.v1_1_8"],
    ),
    ("SessionCollection_v1", &["SessionCollection"]),
    ("Session_v1", &["Session", "Session.v1_5_0"]),
    (
        "AccountService_v1",
        &["AccountService", "AccountService.v1_12_0"],
    ),
    ("ManagerAccountCollection_v1", &["ManagerAccountCollection"]),
    (
        "ManagerAccount_v1",
        &["ManagerAccount", "ManagerAccount.v1_9_0"],
    ),
    ("RoleCollection_v1", &["RoleCollection"]),
    ("Role_v1", &["Role", "Role.v1_3_1"]),
    ("VirtualMediaCollection_v1", &["VirtualMediaCollection"]),
    ("VirtualMedia_v1", &["VirtualMedia", "VirtualMedia.v1_6_0"]),
    ("TaskService_v1", &["TaskService", "TaskService.v1_3_0"]),
    ("TaskCollection_v1", &["TaskCollection"]),
    ("Task_v1", &["Task", "Task.v1_7_0"]),
    ("Message_v1", &["Message", "Message.v1_1_1"]),
    ("Resource_v1", &["Resource", "Resource.v1_0_0"]),
    ("RedfishExtensions_v1", &["RedfishExtensions.v1_0_0"]),
];

/// `$metadata` (DSP0266 §8.4.1): references to DMTF's published schemas and the service's
/// entity container.
pub fn metadata() -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n",
    );
    for (file, namespaces) in SCHEMAS {
        x.push_str(&format!(
            "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/{file}.xml\">\n"
        ));
        for n in *namespaces {
            if n.starts_with("RedfishExtensions") {
                x.push_str(&format!(
                    "    <edmx:Include Namespace=\"{n}\" Alias=\"Redfish\"/>\n"
                ));
            } else {
                x.push_str(&format!("    <edmx:Include Namespace=\"{n}\"/>\n"));
            }
        }
        x.push_str("  </edmx:Reference>\n");
    }
    x.push_str(
        "  <edmx:DataServices>\n\
         \x20   <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"Service\">\n\
         \x20     <EntityContainer Name=\"Service\" Extends=\"ServiceRoot.v1_15_0.ServiceContainer\"/>\n\
         \x20   </Schema>\n\
         \x20 </edmx:DataServices>\n\
         </edmx:Edmx>\n",
    );
    x
}

/// A resource collection.
pub fn collection(ty: &str, name: &str, id: &str, members: impl Iterator<Item = String>) -> Value {
    let members: Vec<Value> = members.map(|m| link(&m)).collect();
    json!({
        "@odata.id": id,
        "@odata.type": format!("#{ty}.{ty}"),
        "Name": name,
        "Members@odata.count": members.len(),
        "Members": members,
    })
}

/// `BootSourceOverrideTarget` values served, in order.
pub const BOOT_TARGETS: [&str; 5] = ["None", "Pxe", "Hdd", "Cd", "BiosSetup"];
/// `BootSourceOverrideEnabled` values.
pub const BOOT_ENABLED: [&str; 3] = ["Disabled", "Once", "Continuous"];
/// `BootSourceOverrideMode` values.
pub const BOOT_MODES: [&str; 2] = ["UEFI", "Legacy"];
/// `ResetType` values, with the Chassis Control action each is (IPMI v2.0 §28.3).
/// GracefulRestart has no IPMI counterpart: it is the machine's reset (Nova: a reboot).
pub const RESETS: [(&str, PowerAction); 7] = [
    ("On", PowerAction::On),
    ("ForceOff", PowerAction::Off),
    ("GracefulShutdown", PowerAction::Soft),
    ("GracefulRestart", PowerAction::Reset),
    ("ForceRestart", PowerAction::Reset),
    ("PowerCycle", PowerAction::Cycle),
    ("Nmi", PowerAction::Diag),
];

fn target_of(d: BootDevice) -> &'static str {
    match d {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk | BootDevice::DiskSafe => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::BiosSetup => "BiosSetup",
        BootDevice::Diag => "Diags",
        BootDevice::NoOverride | BootDevice::Other(_) => "None",
    }
}

fn device_of(t: &str) -> Option<BootDevice> {
    Some(match t {
        "None" => BootDevice::NoOverride,
        "Pxe" => BootDevice::Pxe,
        "Hdd" => BootDevice::Disk,
        "Cd" => BootDevice::Cdrom,
        "BiosSetup" => BootDevice::BiosSetup,
        _ => return None,
    })
}

/// The ComputerSystem.
pub fn system(
    id: &str,
    name: &str,
    power: PowerState,
    boot: BootFlags,
    inventory: Option<&crate::backend::Inventory>,
) -> Value {
    let enabled = match (boot.valid(), boot.persistent()) {
        (false, _) => "Disabled",
        (true, false) => "Once",
        (true, true) => "Continuous",
    };
    let uri = format!("/redfish/v1/Systems/{id}");
    let mut v = json!({
        "@odata.id": uri,
        "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
        "Id": id,
        "Name": name,
        "UUID": id,
        "SystemType": "Virtual",
        "PowerState": match power { PowerState::On => "On", PowerState::Off => "Off" },
        "Status": ok(),
        "Boot": {
            "BootSourceOverrideTarget": target_of(boot.device()),
            "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideEnabled@Redfish.AllowableValues": BOOT_ENABLED,
            "BootSourceOverrideMode": if boot.efi() { "UEFI" } else { "Legacy" },
            "BootSourceOverrideMode@Redfish.AllowableValues": BOOT_MODES,
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("{uri}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": RESETS.map(|(n, _)| n),
            },
        },
        "Links": {
            "ManagedBy": [link(&format!("/redfish/v1/Managers/{id}"))],
            "Chassis": [link(&format!("/redfish/v1/Chassis/{id}"))],
        },
    });
    v["EthernetInterfaces"] = link(&super::ethernet::collection_uri(id));
    // From the flavor, where the backend knows it (ComputerSystem ProcessorSummary.Count,
    // MemorySummary.TotalSystemMemoryGiB; sushy reads both for Ironic's inspection).
    if let Some(inv) = inventory {
        if let Some(n) = inv.cpus {
            v["ProcessorSummary"] = json!({"Count": n});
        }
        if let Some(mib) = inv.memory_mib {
            v["MemorySummary"] = json!({"TotalSystemMemoryGiB": mib as f64 / 1024.0});
        }
    }
    v
}

/// The Manager (the virtual BMC) of a system.
pub fn manager(id: &str, name: &str) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/Managers/{id}"),
        "@odata.type": "#Manager.v1_15_0.Manager",
        "Id": id,
        "Name": format!("BMC of {name}"),
        "ManagerType": "BMC",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "Status": ok(),
        "VirtualMedia": link(&format!("/redfish/v1/Managers/{id}/VirtualMedia")),
        "Links": {
            "ManagerForServers": [link(&format!("/redfish/v1/Systems/{id}"))],
            "ManagerForChassis": [link(&format!("/redfish/v1/Chassis/{id}"))],
        },
    })
}

/// The Chassis of a system.
pub fn chassis(id: &str, name: &str) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/Chassis/{id}"),
        "@odata.type": "#Chassis.v1_21_0.Chassis",
        "Id": id,
        "Name": format!("Chassis of {name}"),
        "ChassisType": "Other",
        "Status": ok(),
        "Links": {
            "ComputerSystems": [link(&format!("/redfish/v1/Systems/{id}"))],
            "ManagedBy": [link(&format!("/redfish/v1/Managers/{id}"))],
        },
    })
}

/// The SessionService.
pub fn session_service(timeout_secs: u64) -> Value {
    json!({
        "@odata.id": "/redfish/v1/SessionService",
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": true,
        "SessionTimeout": timeout_secs,
        "Status": ok(),
        "Sessions": link(SESSIONS),
    })
}

/// One session (never its token).
pub fn session(id: &str, user: &str) -> Value {
    json!({
        "@odata.id": format!("{SESSIONS}/{id}"),
        "@odata.type": "#Session.v1_5_0.Session",
        "Id": id,
        "Name": "User Session",
        "UserName": user,
        "Password": null,
    })
}

/// The AccountService: read-only, the users are the fleet file's.
pub fn account_service() -> Value {
    json!({
        "@odata.id": "/redfish/v1/AccountService",
        "@odata.type": "#AccountService.v1_12_0.AccountService",
        "Id": "AccountService",
        "Name": "Account Service",
        "Description": "Read-only: the users are the BMCs' IPMI users (the fleet file)",
        "ServiceEnabled": true,
        "Status": ok(),
        "Accounts": link("/redfish/v1/AccountService/Accounts"),
        "Roles": link("/redfish/v1/AccountService/Roles"),
    })
}

/// The caller's account.
pub fn account(user: &str, role: Role) -> Value {
    json!({
        "@odata.id": format!("/redfish/v1/AccountService/Accounts/{user}"),
        "@odata.type": "#ManagerAccount.v1_9_0.ManagerAccount",
        "Id": user,
        "Name": "User Account",
        "UserName": user,
        "RoleId": role.id(),
        // Required since ManagerAccount v1_4: the same user logs in over both faces.
        "AccountTypes": ["Redfish", "IPMI"],
        "Enabled": true,
        "Locked": false,
        "Password": null,
        "Links": { "Role": link(&format!("/redfish/v1/AccountService/Roles/{}", role.id())) },
    })
}

/// A predefined role.
pub fn role(r: Role) -> Value {
    let privileges: &[&str] = match r {
        Role::Administrator => &[
            "Login",
            "ConfigureManager",
            "ConfigureUsers",
            "ConfigureSelf",
            "ConfigureComponents",
        ],
        Role::Operator => &["Login", "ConfigureSelf", "ConfigureComponents"],
        Role::ReadOnly => &["Login", "ConfigureSelf"],
    };
    json!({
        "@odata.id": format!("/redfish/v1/AccountService/Roles/{}", r.id()),
        "@odata.type": "#Role.v1_3_1.Role",
        "Id": r.id(),
        "Name": format!("{} Role", r.id()),
        "RoleId": r.id(),
        "IsPredefined": true,
        "AssignedPrivileges": privileges,
    })
}

/// Why a request body was refused: status, Base message id, message, arguments.
#[derive(Debug)]
pub struct Refused(StatusCode, &'static str, String, Vec<String>);

impl Refused {
    fn bad(id: &'static str, message: String, args: Vec<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, id, message, args)
    }

    /// The answer.
    pub fn answer(&self) -> super::Answer {
        let args: Vec<&str> = self.3.iter().map(String::as_str).collect();
        super::error(self.0, self.1, &self.2, &args)
    }
}

fn unknown(prop: &str, current: Option<&Value>) -> Refused {
    if current.is_some() {
        Refused::bad(
            "PropertyNotWritable",
            format!("The property {prop} is a read-only property and cannot be assigned a value."),
            vec![prop.into()],
        )
    } else {
        Refused::bad(
            "PropertyUnknown",
            format!("The property {prop} is not in the list of valid properties for the resource."),
            vec![prop.into()],
        )
    }
}

fn one_of<'a>(v: &'a Value, prop: &str, allowed: &[&str]) -> Result<&'a str, Refused> {
    let Some(s) = v.as_str() else {
        return Err(Refused::bad(
            "PropertyValueTypeError",
            format!(
                "The value '{v}' for the property {prop} is not a type that the property can accept."
            ),
            vec![v.to_string(), prop.into()],
        ));
    };
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(Refused::bad(
            "PropertyValueNotInList",
            format!(
                "The value '{s}' for the property {prop} is not in the list of acceptable values."
            ),
            vec![s.into(), prop.into()],
        ))
    }
}

/// The boot flags a PATCH of a System asks for, from the present ones (bytes 3 to 5 and the
/// other bits kept as they are). A target without `BootSourceOverrideEnabled` on a disabled
/// override enables it for the next boot, as a real BMC does.
pub fn patch_boot(body: &Value, current: &Value, flags: BootFlags) -> Result<BootFlags, Refused> {
    let obj = body.as_object().into_iter().flatten();
    let mut boot = None;
    for (k, v) in obj {
        if k == "Boot" {
            boot = Some(v);
        } else if !k.starts_with('@') {
            return Err(unknown(k, current.get(k)));
        }
    }
    let Some(boot) = boot else {
        return Err(Refused::bad(
            "NoOperation",
            "The request body submitted contain no data to act upon and no changes to the \
             resource took place."
                .into(),
            vec![],
        ));
    };
    let Some(boot) = boot.as_object() else {
        return Err(Refused::bad(
            "PropertyValueTypeError",
            format!(
                "The value '{boot}' for the property Boot is not a type that the property can accept."
            ),
            vec![boot.to_string(), "Boot".into()],
        ));
    };
    let mut b = flags.0;
    let mut enabled_given = false;
    let mut target = None;
    for (k, v) in boot {
        match k.as_str() {
            "BootSourceOverrideTarget" => {
                target =
                    Some(device_of(one_of(v, k, &BOOT_TARGETS)?).unwrap_or(BootDevice::NoOverride));
            }
            "BootSourceOverrideEnabled" => {
                enabled_given = true;
                match one_of(v, k, &BOOT_ENABLED)? {
                    "Disabled" => b[0] &= !0xc0,
                    "Once" => b[0] = (b[0] | 0x80) & !0x40,
                    _ => b[0] |= 0xc0,
                }
            }
            "BootSourceOverrideMode" => match one_of(v, k, &BOOT_MODES)? {
                "UEFI" => b[0] |= 0x20,
                _ => b[0] &= !0x20,
            },
            k if k.contains('@') => {}
            _ => return Err(unknown(&format!("Boot/{k}"), current["Boot"].get(k))),
        }
    }
    if let Some(d) = target {
        b[1] = (b[1] & !0x3c) | (d.selector() << 2);
        if !enabled_given && d != BootDevice::NoOverride && b[0] & 0x80 == 0 {
            b[0] |= 0x80;
        }
    }
    Ok(BootFlags(b))
}

/// The Chassis Control action a `Reset` body asks for.
pub fn reset_action(body: &Value) -> Result<PowerAction, Refused> {
    const ACTION: &str = "ComputerSystem.Reset";
    let obj = body.as_object().into_iter().flatten();
    let mut ty = None;
    for (k, v) in obj {
        if k == "ResetType" {
            ty = Some(v);
        } else {
            return Err(Refused::bad(
                "ActionParameterUnknown",
                format!("The action {ACTION} was submitted with the invalid parameter {k}."),
                vec![ACTION.into(), k.clone()],
            ));
        }
    }
    let Some(ty) = ty else {
        return Err(Refused::bad(
            "ActionParameterMissing",
            format!(
                "The action {ACTION} requires the parameter ResetType to be present in the request body."
            ),
            vec![ACTION.into(), "ResetType".into()],
        ));
    };
    let name = ty.as_str().unwrap_or("");
    RESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            Refused::bad(
                "ActionParameterValueNotInList",
                format!(
                    "The value '{ty}' for the parameter ResetType in the action {ACTION} is not \
                     in the list of acceptable values."
                ),
                vec![ty.to_string(), "ResetType".into(), ACTION.into()],
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_flavor_gives_processor_and_memory_summaries() {
        let inv = crate::backend::Inventory {
            cpus: Some(4),
            memory_mib: Some(6144),
            ..Default::default()
        };
        let v = system("id", "n", PowerState::On, BootFlags::default(), Some(&inv));
        assert_eq!(v["ProcessorSummary"], json!({"Count": 4}));
        assert_eq!(v["MemorySummary"], json!({"TotalSystemMemoryGiB": 6.0}));
        let v = system("id", "n", PowerState::On, BootFlags::default(), None);
        assert!(v.get("ProcessorSummary").is_none() && v.get("MemorySummary").is_none());
    }

    fn sys(flags: BootFlags) -> Value {
        system("u", "n", PowerState::Off, flags, None)
    }

    #[test]
    fn boot_patch_maps_onto_ipmi_flags() {
        let none = BootFlags::default();
        let body = json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "UEFI"}});
        let f = patch_boot(&body, &sys(none), none).unwrap();
        assert_eq!(f, BootFlags::new(BootDevice::Pxe, true, true));
        let v = sys(f);
        assert_eq!(v["Boot"]["BootSourceOverrideTarget"], "Pxe");
        assert_eq!(v["Boot"]["BootSourceOverrideEnabled"], "Continuous");
        assert_eq!(v["Boot"]["BootSourceOverrideMode"], "UEFI");
        // A target alone on a disabled override: next boot only.
        let f = patch_boot(
            &json!({"Boot": {"BootSourceOverrideTarget": "Cd"}}),
            &v,
            none,
        )
        .unwrap();
        assert_eq!(f, BootFlags::new(BootDevice::Cdrom, false, false));
        // ipmitool chassis bootdev pxe (data 1 = 0x80): Pxe, Once, Legacy.
        let v = sys(BootFlags::new(BootDevice::Pxe, false, false));
        assert_eq!(v["Boot"]["BootSourceOverrideEnabled"], "Once");
        assert_eq!(v["Boot"]["BootSourceOverrideMode"], "Legacy");
    }

    #[test]
    fn bad_patches_are_refused_with_base_messages() {
        let none = BootFlags::default();
        let cur = sys(none);
        let id = |b: Value| patch_boot(&b, &cur, none).err().map(|r| r.1);
        assert_eq!(id(json!({"Name": "x"})), Some("PropertyNotWritable"));
        assert_eq!(id(json!({"Nope": 1})), Some("PropertyUnknown"));
        assert_eq!(
            id(json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}})),
            Some("PropertyValueNotInList")
        );
        assert_eq!(
            id(json!({"Boot": {"BootSourceOverrideMode": 3}})),
            Some("PropertyValueTypeError")
        );
        assert_eq!(id(json!({})), Some("NoOperation"));
    }

    #[test]
    fn reset_types() {
        for (n, a) in RESETS {
            assert_eq!(reset_action(&json!({ "ResetType": n })).ok(), Some(a));
        }
        let id = |b: Value| reset_action(&b).err().map(|r| r.1);
        assert_eq!(id(json!({})), Some("ActionParameterMissing"));
        assert_eq!(
            id(json!({"ResetType": "Off"})),
            Some("ActionParameterValueNotInList")
        );
        assert_eq!(
            id(json!({"ResetType": "On", "X": 1})),
            Some("ActionParameterUnknown")
        );
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(allowed("/redfish/v1/Systems/x"), Some(GET_PATCH));
        assert_eq!(
            allowed("/redfish/v1/Systems/x/Actions/ComputerSystem.Reset"),
            Some(POST)
        );
        assert_eq!(allowed("/redfish/v1/Nope"), None);
        assert!(metadata().contains("ComputerSystem.v1_20_0"));
    }
}
