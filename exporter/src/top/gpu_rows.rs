//! The GPU view's rows: each device with its power and its share of its node's power, and under it
//! its idle power, each pod on it (under its MIG instance where there is one) and the active power
//! no pod received, each with its share of the device's power. Pure.

use super::gpu::{GpuDevice, GpuUse};
use super::model::{Consumer, Reading};
use super::table::{Figures, GpuPlace, GpuRowKind, Row};
use crate::remote::series::or_if_empty;
use std::collections::{BTreeSet, HashMap};

/// Every device of every node, each followed by what it is split into.
pub(crate) fn rows(reading: &Reading) -> Vec<Row> {
    let pods: HashMap<(&str, &str), &Consumer> = reading
        .pods
        .iter()
        .map(|p| ((p.node.as_str(), p.pod_id.as_str()), p))
        .collect();
    let mut out = Vec::new();
    for device in &reading.gpus {
        let uses: Vec<&GpuUse> = reading
            .gpu_uses
            .iter()
            .filter(|u| u.node == device.node && u.device == device.id)
            .collect();
        Device {
            device,
            key: format!("{}/{}", device.node, device.id),
            uses: &uses,
            pods: &pods,
        }
        .rows(reading, &mut out);
    }
    out
}

struct Device<'r> {
    device: &'r GpuDevice,
    key: String,
    uses: &'r [&'r GpuUse],
    pods: &'r HashMap<(&'r str, &'r str), &'r Consumer>,
}

impl Device<'_> {
    /// The device's power and energy: its own series, else (only pod series name it) its pods'.
    fn figures(&self) -> Figures {
        if self.device.has_device_series {
            Figures::gpu(self.device.watts.total, self.device.joules.total)
        } else {
            used(self.uses.iter().copied())
        }
    }

    /// What the device row says besides its numbers, marking what the series did not say.
    fn detail(&self, instances: usize) -> String {
        let pods: BTreeSet<&str> = self.uses.iter().map(|u| u.pod_id.as_str()).collect();
        let mut parts = Vec::new();
        if !self.device.has_device_series {
            parts.push("no device series".to_string());
        }
        if self.device.uuid.is_empty() {
            parts.push("no gpu_uuid".to_string());
        }
        if instances > 0 {
            parts.push(format!("{instances} MIG"));
        }
        parts.push(pod_count(pods.len()));
        parts.join(", ")
    }

    fn place(&self, kind: GpuRowKind, instance: &str) -> Option<GpuPlace> {
        Some(GpuPlace {
            kind,
            gpu_uuid: self.device.uuid.clone(),
            gpu_instance: instance.to_string(),
        })
    }

    /// A row under `parent`; its share is of the device's power.
    #[allow(clippy::too_many_arguments)]
    fn child(
        &self,
        figures: Figures,
        key: String,
        name: String,
        detail: String,
        parent: &str,
        depth: u8,
        place: Option<GpuPlace>,
    ) -> Row {
        let mut row = figures.row(
            key,
            name,
            detail,
            self.device.node.clone(),
            self.figures().watts(),
        );
        row.parent = Some(parent.to_string());
        row.depth = depth;
        row.gpu = place;
        row
    }

    fn rows(&self, reading: &Reading, out: &mut Vec<Row>) {
        let d = self.device;
        let key = &self.key;
        let instances: BTreeSet<&str> = self
            .uses
            .iter()
            .map(|u| u.instance.as_str())
            .filter(|i| !i.is_empty())
            .collect();
        let mut row = self.figures().row(
            key.clone(),
            d.display_name(),
            self.detail(instances.len()),
            d.node.clone(),
            reading.node_total_watts(&d.node),
        );
        row.gpu = self.place(GpuRowKind::Device, "");
        out.push(row);
        if d.has_device_series {
            out.push(self.child(
                Figures::gpu(d.watts.idle, d.joules.idle),
                format!("{key}/(idle)"),
                "(idle)".into(),
                String::new(),
                key,
                1,
                self.place(GpuRowKind::Idle, ""),
            ));
            out.push(self.child(
                Figures::gpu(d.watts.unattributed, d.joules.unattributed),
                format!("{key}/(unattributed)"),
                "(unattributed)".into(),
                "not in a pod".into(),
                key,
                1,
                self.place(GpuRowKind::Unattributed, ""),
            ));
        }
        for instance in &instances {
            let on = self
                .uses
                .iter()
                .copied()
                .filter(|u| u.instance == *instance);
            out.push(self.child(
                used(on.clone()),
                format!("{key}/{instance}"),
                instance.to_string(),
                format!("MIG, {}", pod_count(on.count())),
                key,
                1,
                self.place(GpuRowKind::MigInstance, instance),
            ));
        }
        for u in self.uses {
            let (parent, depth) = if u.instance.is_empty() {
                (key.clone(), 1)
            } else {
                (format!("{key}/{}", u.instance), 2)
            };
            let pod = self.pods.get(&(u.node.as_str(), u.pod_id.as_str()));
            let pod_name = pod.map_or("", |p| p.name.as_str());
            let name = or_if_empty(pod_name, or_if_empty(&u.pod_id, "(no pod_id)"));
            // The pod's user where it is a JupyterHub server, else its namespace.
            let detail = pod.map_or("", |p| or_if_empty(&p.hub_user, &p.namespace));
            out.push(self.child(
                Figures::gpu(u.watts, u.joules),
                format!("{parent}/{}", u.pod_id),
                name.to_string(),
                detail.to_string(),
                &parent,
                depth,
                self.place(GpuRowKind::Pod, &u.instance),
            ));
        }
    }
}

/// The GPU power and energy of `uses` together.
fn used<'u>(uses: impl Iterator<Item = &'u GpuUse> + Clone) -> Figures {
    Figures::gpu(
        uses.clone().map(|u| u.watts).sum(),
        uses.map(|u| u.joules).sum(),
    )
}

fn pod_count(pods: usize) -> String {
    match pods {
        0 => "no pods".to_string(),
        1 => "1 pod".to_string(),
        n => format!("{n} pods"),
    }
}
