//! Per-device sampling: energy deltas from NVML's total-energy counter (or power integrated over time
//! where the counter is unsupported), and who used each device during the interval. Owns the counter
//! state; skips a failing device for one tick and re-initialises NVML after a driver restart.
//! It never attributes energy (that is `gpu::attribution`).

use super::driver::{DeviceInfo, GpuDriver, GpuError};
use crate::issue::{Input, IssueKind, SourceIssue};
use crate::units::{Joules, Pid};
use std::collections::BTreeMap;
use std::time::Duration;

/// A delta implying more than this per device is rejected as an anomaly (no GPU draws 5 kW).
pub(crate) const MAX_PLAUSIBLE_WATTS: f64 = 5_000.0;

crate::issue::labelled! {
    /// How a device's energy is measured, decided at its first reading.
    pub(crate) enum EnergyMethod {
        /// `nvmlDeviceGetTotalEnergyConsumption` (millijoules, Volta and newer).
        Counter => "energy_counter",
        /// Power readings integrated over the interval (trapezoid), where the counter is unsupported.
        PowerIntegral => "power_integral",
    }
}

/// A process's use of a device over the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUse {
    pub pid: Pid,
    /// Sum of SM utilisation samples (percent) over the interval; `None` where the device cannot sample.
    pub sm_util: Option<f64>,
    /// MIG instance (position in `DeviceInfo::mig`) where MIG is on.
    pub instance: Option<usize>,
}

/// One device's reading for the interval.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeviceReading {
    /// Stable position of the device in `DeviceSampler::devices()`.
    pub(crate) slot: usize,
    /// Energy over the interval; `None` when this reading only set the baseline.
    pub(crate) energy: Option<Joules>,
    /// Seconds that `energy` covers: since the device's last good reading, so longer than the tick
    /// after the device failed for a while (its energy arrives late, not lost).
    pub(crate) seconds: f64,
    /// Device utilisation (0..=1) at the reading; `None` where the device cannot say.
    pub(crate) utilization: Option<f64>,
    pub(crate) processes: Vec<ProcessUse>,
}

/// One tick's readings. A device that failed this tick is absent (its energy arrives with the next
/// good reading); `issues` are counted by the monitor.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuSample {
    pub(crate) devices: Vec<DeviceReading>,
    pub(crate) issues: Vec<SourceIssue>,
}

#[derive(Debug, Clone)]
struct DeviceState {
    info: DeviceInfo,
    method: Option<EnergyMethod>,
    last_energy_mj: Option<u64>,
    last_power_w: Option<f64>,
    /// Newest utilisation timestamp seen (µs), for the next query.
    last_util_us: u64,
    util_supported: bool,
    /// Whether the device reports its utilisation (`utilization_percent`).
    device_util_supported: bool,
    /// Seconds since the last good energy reading (more than one tick while the device fails).
    unread_secs: f64,
    /// The last counter reading, when it was refused as implausible: held for one reading.
    refused: Option<Refused>,
}

/// An energy counter reading refused as implausible, and the seconds since it was read.
#[derive(Debug, Clone, Copy)]
struct Refused {
    mj: u64,
    secs: f64,
}

impl DeviceState {
    fn new(info: DeviceInfo) -> DeviceState {
        DeviceState {
            info,
            method: None,
            last_energy_mj: None,
            last_power_w: None,
            last_util_us: 0,
            util_supported: true,
            device_util_supported: true,
            unread_secs: 0.0,
            refused: None,
        }
    }

    /// Takes an energy counter reading: the energy since the last good one, and the seconds it
    /// covers. A delta above the plausible power is refused and carried like a failed read: the last
    /// good reading stays the baseline for one more reading, so a misread loses nothing. A second
    /// implausible delta in a row means the counter did jump: the delta since the refused reading is
    /// taken instead, and the refused interval is reported lost.
    fn take_counter(&mut self, mj: u64, issues: &mut Vec<SourceIssue>) -> (Option<Joules>, f64) {
        let index = self.info.index;
        let secs = self.unread_secs;
        let refused = self.refused.take();
        let previous = self.last_energy_mj.replace(mj);
        let plausible =
            |joules: f64, secs: f64| !(secs > 0.0 && joules / secs > MAX_PLAUSIBLE_WATTS);
        let joules = match previous {
            Some(prev) if mj >= prev => (mj - prev) as f64 / 1000.0,
            Some(prev) => {
                // The counter restarts at 0 when the driver is reloaded: new baseline.
                issues.push(SourceIssue::new(
                    Input::Gpu,
                    IssueKind::CounterReset,
                    format!("GPU {index}: energy counter went back from {prev} mJ to {mj} mJ (driver reloaded?); re-baselined"),
                ));
                self.unread_secs = 0.0;
                return (None, secs);
            }
            None => {
                self.unread_secs = 0.0;
                return (None, secs);
            }
        };
        if plausible(joules, secs) {
            self.unread_secs = 0.0;
            return (Some(Joules(joules)), secs);
        }
        let anomaly = |what: &str| {
            SourceIssue::new(
                Input::Gpu,
                IssueKind::CounterAnomaly,
                format!("GPU {index}: {joules} J in {secs} s is implausible; {what}"),
            )
        };
        let Some(refused) = refused else {
            self.last_energy_mj = previous;
            self.refused = Some(Refused { mj, secs: 0.0 });
            issues.push(anomaly(
                "held: the next reading is measured from the last good one",
            ));
            return (None, secs);
        };
        issues.push(anomaly(
            "twice: re-based at the refused reading, whose interval is lost",
        ));
        self.unread_secs = 0.0;
        let from_refused = mj
            .checked_sub(refused.mj)
            .map(|delta| delta as f64 / 1000.0)
            .filter(|joules| plausible(*joules, refused.secs));
        (from_refused.map(Joules), refused.secs)
    }
}

/// Samples every device of a driver. Devices are discovered once; after a driver restart they are
/// re-discovered and matched by UUID, so a device keeps its slot (and its counters) for the process's life.
pub struct DeviceSampler {
    driver: Box<dyn GpuDriver>,
    devices: Vec<DeviceState>,
}

fn issue(e: &GpuError) -> SourceIssue {
    SourceIssue::new(Input::Gpu, e.kind(), e.to_string())
}

impl DeviceSampler {
    /// Discover the driver's devices. An error here means no usable GPU support.
    pub fn discover(mut driver: Box<dyn GpuDriver>) -> Result<DeviceSampler, GpuError> {
        let devices = driver
            .devices()?
            .into_iter()
            .map(DeviceState::new)
            .collect();
        Ok(DeviceSampler { driver, devices })
    }

    /// Every device seen since start, by slot.
    pub(crate) fn devices(&self) -> impl Iterator<Item = &DeviceInfo> {
        self.devices.iter().map(|d| &d.info)
    }

    pub(crate) fn device(&self, slot: usize) -> Option<&DeviceInfo> {
        self.devices.get(slot).map(|d| &d.info)
    }

    /// How the device's energy is measured (`None` before its first reading).
    pub(crate) fn method(&self, slot: usize) -> Option<EnergyMethod> {
        self.devices.get(slot).and_then(|d| d.method)
    }

    /// Read every device; `elapsed` is the time since the previous call (used by the power integral).
    pub(crate) fn sample(&mut self, elapsed: Duration) -> GpuSample {
        let mut out = GpuSample::default();
        let mut driver_failures = 0usize;
        for d in &mut self.devices {
            d.unread_secs += elapsed.as_secs_f64();
            if let Some(refused) = &mut d.refused {
                refused.secs += elapsed.as_secs_f64();
            }
        }
        for slot in 0..self.devices.len() {
            match self.sample_device(slot, &mut out.issues) {
                Ok(reading) => out.devices.push(reading),
                Err(e) => {
                    if e.is_driver_failure() {
                        driver_failures += 1;
                    }
                    out.issues.push(issue(&e));
                }
            }
        }
        if !self.devices.is_empty() && driver_failures == self.devices.len() {
            // Every device failed as if the driver were gone: try to load it again for the next tick.
            self.reinit(&mut out.issues);
        }
        out
    }

    fn reinit(&mut self, issues: &mut Vec<SourceIssue>) {
        let found = self.driver.reinit().and_then(|()| self.driver.devices());
        match found {
            Ok(found) => {
                for info in found {
                    match self.devices.iter_mut().find(|d| d.info.uuid == info.uuid) {
                        Some(d) => {
                            d.info = info;
                            d.last_power_w = None;
                            d.last_util_us = 0;
                        }
                        None => self.devices.push(DeviceState::new(info)),
                    }
                }
                tracing::info!("NVML re-initialised after every GPU failed");
            }
            Err(e) => issues.push(issue(&e)),
        }
    }

    fn sample_device(
        &mut self,
        slot: usize,
        issues: &mut Vec<SourceIssue>,
    ) -> Result<DeviceReading, GpuError> {
        let (energy, seconds) = self.read_energy(slot, issues)?;
        let utilization = self.read_utilization(slot, issues);
        let processes = self.read_processes(slot, issues);
        Ok(DeviceReading {
            slot,
            energy,
            seconds,
            utilization,
            processes,
        })
    }

    /// Energy since the last good reading, and the seconds it covers (`unread_secs`: the anomaly
    /// bound and the power integral use that span, not the tick, so a device that failed for a while
    /// loses nothing).
    fn read_energy(
        &mut self,
        slot: usize,
        issues: &mut Vec<SourceIssue>,
    ) -> Result<(Option<Joules>, f64), GpuError> {
        let state = &mut self.devices[slot];
        let index = state.info.index;
        let secs = state.unread_secs;
        if state.method != Some(EnergyMethod::PowerIntegral) {
            match self.driver.total_energy_mj(index) {
                Ok(mj) => {
                    state.method = Some(EnergyMethod::Counter);
                    return Ok(state.take_counter(mj, issues));
                }
                Err(GpuError::NotSupported { .. }) if state.method.is_none() => {
                    tracing::info!(
                        gpu = index,
                        "GPU {index} has no total-energy counter (older than Volta?): integrating its power readings"
                    );
                    state.method = Some(EnergyMethod::PowerIntegral);
                }
                Err(e) => return Err(e),
            }
        }
        let mw = self.driver.power_mw(index)?;
        let watts = f64::from(mw) / 1000.0;
        let previous = state.last_power_w.replace(watts);
        state.unread_secs = 0.0;
        Ok((previous.map(|p| Joules((p + watts) / 2.0 * secs)), secs))
    }

    /// The device's utilisation; `None` (asked no more) where unsupported, or this tick on a failure.
    fn read_utilization(&mut self, slot: usize, issues: &mut Vec<SourceIssue>) -> Option<f64> {
        let state = &mut self.devices[slot];
        if !state.device_util_supported {
            return None;
        }
        match self.driver.utilization_percent(state.info.index) {
            Ok(percent) => Some(f64::from(percent.min(100)) / 100.0),
            Err(GpuError::NotSupported { .. }) => {
                state.device_util_supported = false;
                None
            }
            Err(e) => {
                issues.push(issue(&e));
                None
            }
        }
    }

    /// Processes of the interval. A failure here keeps the device's energy (it goes to unattributed)
    /// and is counted.
    fn read_processes(&mut self, slot: usize, issues: &mut Vec<SourceIssue>) -> Vec<ProcessUse> {
        let state = &mut self.devices[slot];
        let index = state.info.index;
        let mut by_pid: BTreeMap<Pid, ProcessUse> = BTreeMap::new();
        match self.driver.running_processes(index) {
            Ok(running) => {
                for p in running {
                    by_pid.entry(p.pid).or_insert(ProcessUse {
                        pid: p.pid,
                        sm_util: None,
                        instance: p.mig_instance,
                    });
                }
            }
            Err(e) => issues.push(issue(&e)),
        }
        // NVML cannot sample per-process utilisation in MIG mode; don't ask.
        if state.util_supported && state.info.mig.is_empty() {
            match self.driver.process_utilization(index, state.last_util_us) {
                Ok(samples) => {
                    let since = state.last_util_us;
                    for p in by_pid.values_mut() {
                        p.sm_util = Some(0.0);
                    }
                    for s in samples {
                        // Samples at or before the last seen timestamp were counted last tick.
                        if since != 0 && s.timestamp_us <= since {
                            continue;
                        }
                        let entry = by_pid.entry(s.pid).or_insert(ProcessUse {
                            pid: s.pid,
                            sm_util: Some(0.0),
                            instance: None,
                        });
                        *entry.sm_util.get_or_insert(0.0) += f64::from(s.sm_util.min(100));
                        state.last_util_us = state.last_util_us.max(s.timestamp_us);
                    }
                }
                Err(GpuError::NotSupported { .. }) => {
                    tracing::info!(
                        gpu = index,
                        "GPU {index} cannot sample per-process utilisation: its energy is split evenly over its processes"
                    );
                    state.util_supported = false;
                }
                Err(e) => issues.push(issue(&e)),
            }
        }
        by_pid.into_values().collect()
    }
}
