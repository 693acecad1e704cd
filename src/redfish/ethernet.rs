//! A System's `EthernetInterfaces` (DSP0266; schema EthernetInterface v1_12 in DMTF's CSDL,
//! ../shared/redfish/csdl/EthernetInterface_v1.xml): one member per MAC address of the
//! instance's ports, as Nova lists them (`addresses.*[].OS-EXT-IPS-MAC:mac_addr`, via
//! [`Inventory::macs`]); an empty collection where the backend knows none (the simulator, an
//! instance without ports). sushy reads `MACAddress` and `Status.State` of these for Ironic's
//! out-of-band inspection (a port per `Enabled` interface).

use serde_json::{Value, json};

use crate::backend::{Inventory, PowerState};

/// A MAC address as Redfish writes one (EthernetInterface.v1_0_0.MACAddress:
/// `^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$`); anything else a backend reports is left out
/// rather than served against the schema.
fn well_formed(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A member's `Id`: the MAC in lower case without separators (stable across restarts and
/// reloads, unlike an index, and safe in a URI segment).
pub fn nic_id(mac: &str) -> String {
    mac.to_ascii_lowercase().replace(':', "")
}

/// The MACs served, each once, lower case, in the order the backend lists them.
fn macs(inv: Option<&Inventory>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in inv.map(|i| i.macs.as_slice()).unwrap_or_default() {
        let m = m.to_ascii_lowercase();
        if well_formed(&m) && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The collection URI of a system.
pub fn collection_uri(system: &str) -> String {
    format!("/redfish/v1/Systems/{system}/EthernetInterfaces")
}

/// The EthernetInterfaceCollection of a system.
pub fn collection(system: &str, inv: Option<&Inventory>) -> Value {
    let base = collection_uri(system);
    super::resources::collection(
        "EthernetInterfaceCollection",
        "Ethernet Interface Collection",
        &base,
        macs(inv)
            .into_iter()
            .map(|m| format!("{base}/{}", nic_id(&m))),
    )
}

/// One interface (`nic` a member `Id`), or `None` if the system has no such MAC. `power`:
/// the machine's power state where known, for `LinkStatus` (a stopped guest's virtual NIC has
/// no link).
pub fn interface(
    system: &str,
    nic: &str,
    inv: Option<&Inventory>,
    power: Option<PowerState>,
) -> Option<Value> {
    let mac = macs(inv).into_iter().find(|m| nic_id(m) == nic)?;
    let nets: Vec<&str> = inv
        .map(|i| i.mac_networks.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|(m, _)| m.eq_ignore_ascii_case(&mac))
        .map(|(_, n)| n.as_str())
        .collect();
    let mut v = json!({
        "@odata.id": format!("{}/{nic}", collection_uri(system)),
        "@odata.type": "#EthernetInterface.v1_12_0.EthernetInterface",
        "Id": nic,
        "Name": "Ethernet Interface",
        // Nova gives the port's MAC only; a virtual NIC has no burnt-in address of its own.
        "MACAddress": mac,
        "PermanentMACAddress": mac,
        "InterfaceEnabled": true,
        // Enabled whatever the power state: sushy (Ironic's inspection) makes ports only of
        // interfaces whose State is Enabled.
        "Status": { "State": "Enabled", "Health": "OK" },
    });
    if let Some(p) = power {
        v["LinkStatus"] = json!(match p {
            PowerState::On => "LinkUp",
            PowerState::Off => "LinkDown",
        });
    }
    if !nets.is_empty() {
        v["Description"] = json!(format!("Port on network {}", nets.join(", ")));
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory {
            macs: vec![
                "FA:16:3E:00:00:01".into(),
                "fa:16:3e:00:00:02".into(),
                "fa:16:3e:00:00:01".into(),
                "not-a-mac".into(),
            ],
            mac_networks: vec![
                ("fa:16:3e:00:00:01".into(), "provisioning".into()),
                ("fa:16:3e:00:00:02".into(), "public".into()),
                ("fa:16:3e:00:00:02".into(), "other".into()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn one_member_per_well_formed_mac() {
        let c = collection("u", Some(&inv()));
        assert_eq!(c["Members@odata.count"], 2);
        assert_eq!(
            c["Members"][0]["@odata.id"],
            "/redfish/v1/Systems/u/EthernetInterfaces/fa163e000001"
        );
        let e = collection("u", None);
        assert_eq!(e["Members@odata.count"], 0);
        assert_eq!(e["@odata.id"], "/redfish/v1/Systems/u/EthernetInterfaces");
    }

    #[test]
    fn a_member_has_its_mac_link_and_networks() {
        let i = inv();
        let v = interface("u", "fa163e000002", Some(&i), Some(PowerState::Off)).unwrap();
        assert_eq!(v["MACAddress"], "fa:16:3e:00:00:02");
        assert_eq!(v["PermanentMACAddress"], "fa:16:3e:00:00:02");
        assert_eq!(v["LinkStatus"], "LinkDown");
        assert_eq!(v["Status"]["State"], "Enabled");
        assert_eq!(v["Description"], "Port on network public, other");
        let v = interface("u", "fa163e000001", Some(&i), None).unwrap();
        assert!(v.get("LinkStatus").is_none());
        assert!(interface("u", "nope", Some(&i), None).is_none());
        assert!(interface("u", "fa163e000001", None, None).is_none());
    }
}
