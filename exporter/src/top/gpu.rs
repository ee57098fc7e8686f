//! The GPU part of a `Reading`: each device's energy and power (total, idle, active, unattributed)
//! and each pod's use of a device or MIG instance, from the catalog's GPU families. A series with a
//! missing `gpu_uuid`, or a pod series naming a device no device series describes, is kept and
//! marked as such, never dropped or matched by guess. No I/O.

use crate::catalog::{self, Family, Measure, Part, Scope};
use crate::remote::exposition::Sample;
use crate::remote::series::{clean, or_if_empty};
use std::collections::BTreeMap;

/// The parts of one GPU's energy (joules) or power (watts): `total = idle + active`,
/// `active = Σ pods + unattributed` (+ pods ended after their grace period).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct GpuParts {
    pub(crate) total: f64,
    pub(crate) idle: f64,
    pub(crate) active: f64,
    /// Active energy no pod received (host processes, unplaceable PIDs, no process).
    pub(crate) unattributed: f64,
}

/// The parts of a GPU's energy that `GpuParts` holds.
pub(crate) const GPU_PARTS: [Part; 4] = [Part::Total, Part::Idle, Part::Active, Part::Unattributed];

impl GpuParts {
    /// The figure of `part`; None for a part a GPU does not have.
    pub(crate) fn get_mut(&mut self, part: Part) -> Option<&mut f64> {
        match part {
            Part::Total => Some(&mut self.total),
            Part::Idle => Some(&mut self.idle),
            Part::Active => Some(&mut self.active),
            Part::Unattributed => Some(&mut self.unattributed),
            _ => None,
        }
    }
}

/// One GPU of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GpuDevice {
    pub(crate) node: String,
    /// What identifies the device on its node: its UUID, else `gpu <index>`, else `(no gpu_uuid)`.
    pub(crate) id: String,
    /// The NVML index (`gpu` label); empty when the series had none.
    pub(crate) index: String,
    /// `gpu_uuid`; empty when the series had none.
    pub(crate) uuid: String,
    /// The product name (`gpu_name`).
    pub(crate) name: String,
    /// `energy_counter` or `power_integral` (from `kepler_node_gpu_info`).
    pub(crate) method: String,
    /// False when only pod or container series named this device: its power is unknown.
    pub(crate) has_device_series: bool,
    pub(crate) joules: GpuParts,
    pub(crate) gauge_watts: GpuParts,
    /// The rates between two readings where known, else the gauges.
    pub(crate) watts: GpuParts,
}

/// A pod's use of one GPU (or one MIG instance of it).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GpuUse {
    pub(crate) node: String,
    /// The device's `GpuDevice::id`.
    pub(crate) device: String,
    /// The MIG instance (`gpu_instance`); empty without MIG.
    pub(crate) instance: String,
    pub(crate) pod_id: String,
    pub(crate) joules: f64,
    pub(crate) gauge_watts: f64,
    /// The rate between two readings where known, else the gauge.
    pub(crate) watts: f64,
}

/// The device id of a series: its UUID, else its index, else a marker that says neither was given.
pub(crate) fn device_id(s: &Sample<'_>) -> String {
    let (uuid, index) = (s.label("gpu_uuid"), s.label("gpu"));
    if !uuid.is_empty() {
        clean(uuid)
    } else if !index.is_empty() {
        format!("gpu {}", clean(index))
    } else {
        "(no gpu_uuid)".to_string()
    }
}

/// Collects GPU series while the reading is built.
#[derive(Debug, Default)]
pub(crate) struct GpuBuilder {
    devices: BTreeMap<(String, String), GpuDevice>,
    uses: BTreeMap<(String, String, String, String), GpuUse>,
}

impl GpuBuilder {
    /// The device a series names, with its UUID and index filled from the first series that
    /// gives them.
    fn device(&mut self, s: &Sample<'_>) -> &mut GpuDevice {
        let node = clean(s.label("node_name"));
        let id = device_id(s);
        let device = self
            .devices
            .entry((node.clone(), id.clone()))
            .or_insert_with(|| GpuDevice {
                node,
                id,
                ..GpuDevice::default()
            });
        if device.uuid.is_empty() {
            device.uuid = clean(s.label("gpu_uuid"));
        }
        if device.index.is_empty() {
            device.index = clean(s.label("gpu"));
        }
        device
    }

    /// Take one sample of a GPU family (`family.resource == Resource::Gpu`).
    pub(crate) fn add(&mut self, family: &Family, s: &Sample<'_>) {
        match family.scope {
            Scope::GpuDevice => {
                let device = self.device(s);
                device.has_device_series = true;
                if device.name.is_empty() {
                    device.name = clean(s.label("gpu_name"));
                }
                let figure = match family.measure {
                    Measure::Joules(part) => device.joules.get_mut(part),
                    Measure::Watts(part) => device.gauge_watts.get_mut(part),
                    Measure::Info if family == &catalog::NODE_GPU_INFO && s.value > 0.0 => {
                        device.method = clean(s.label("method"));
                        None
                    }
                    _ => None,
                };
                if let Some(figure) = figure {
                    *figure += s.value;
                }
            }
            Scope::Pod => {
                let is_joules = match family.measure {
                    Measure::Joules(_) => true,
                    Measure::Watts(_) => false,
                    _ => return,
                };
                // A pod series names its device: make sure it is listed, even without device series.
                let device = self.device(s);
                let key = (
                    device.node.clone(),
                    device.id.clone(),
                    clean(s.label("gpu_instance")),
                    clean(s.label("pod_id")),
                );
                let entry = self.uses.entry(key.clone()).or_insert_with(|| GpuUse {
                    node: key.0,
                    device: key.1,
                    instance: key.2,
                    pod_id: key.3,
                    ..GpuUse::default()
                });
                if is_joules {
                    entry.joules += s.value;
                } else {
                    entry.gauge_watts += s.value;
                }
            }
            _ => {}
        }
    }

    /// Devices sorted by node and index, and the uses; every watts figure starts as its gauge. The
    /// unattributed power has no gauge: until there is a rate it is active minus the pods' gauges.
    pub(crate) fn finish(self) -> (Vec<GpuDevice>, Vec<GpuUse>) {
        let mut uses: Vec<GpuUse> = self.uses.into_values().collect();
        for u in uses.iter_mut() {
            u.watts = u.gauge_watts;
        }
        let mut devices: Vec<GpuDevice> = self.devices.into_values().collect();
        for d in devices.iter_mut() {
            if d.has_device_series {
                let pods: f64 = uses
                    .iter()
                    .filter(|u| u.node == d.node && u.device == d.id)
                    .map(|u| u.gauge_watts)
                    .sum();
                d.gauge_watts.unattributed = (d.gauge_watts.active - pods).max(0.0);
            }
            d.watts = d.gauge_watts;
        }
        devices.sort_by(|a, b| order(a).cmp(&order(b)));
        (devices, uses)
    }
}

/// Devices sort by node, then index (NVML indices as numbers, `2` before `10`; anything else after
/// them), then id.
fn order(d: &GpuDevice) -> (&str, u64, &str, &str) {
    (
        &d.node,
        d.index.parse().unwrap_or(u64::MAX),
        &d.index,
        &d.id,
    )
}

impl GpuDevice {
    /// What to show: `index: product name`, with markers for what the series did not say.
    pub(crate) fn display_name(&self) -> String {
        let name = or_if_empty(or_if_empty(&self.name, &self.uuid), "GPU");
        format!("{}: {name}", or_if_empty(&self.index, "?"))
    }
}
