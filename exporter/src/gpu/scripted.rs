//! A scripted `GpuDriver` for tests and benchmarks: devices whose energy counters, power, processes,
//! utilisation samples and failures are set by the test between ticks through a shared `Script`.
//! No NVML, no I/O.

use super::driver::{DeviceInfo, GpuDriver, GpuError, RunningProcess, UtilSample};
use crate::issue::IssueKind;
use std::sync::{Arc, Mutex, MutexGuard};

/// One scripted device. `None` energy means the counter is unsupported (pre-Volta).
#[derive(Debug, Clone)]
pub struct ScriptedDevice {
    pub info: DeviceInfo,
    pub energy_mj: Option<u64>,
    pub(crate) power_mw: u32,
    /// `None`: per-process utilisation unsupported.
    pub util: Option<Vec<UtilSample>>,
    pub running: Vec<RunningProcess>,
    /// Device utilisation in percent; `None`: unsupported.
    pub(crate) gpu_util: Option<u32>,
    /// Every call on this device fails with this error kind (`GpuLost`, `Unknown`, ...).
    pub(crate) fail: Option<IssueKind>,
}

impl ScriptedDevice {
    pub fn new(index: u32, uuid: &str) -> ScriptedDevice {
        ScriptedDevice {
            info: DeviceInfo {
                index,
                uuid: uuid.to_string(),
                name: "Scripted GPU".to_string(),
                mig: Vec::new(),
            },
            energy_mj: Some(0),
            power_mw: 0,
            util: Some(Vec::new()),
            running: Vec::new(),
            gpu_util: None,
            fail: None,
        }
    }
}

/// The script a test edits between ticks.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub devices: Vec<ScriptedDevice>,
    /// `reinit` fails while this is set (driver still down).
    pub(crate) driver_down: bool,
    pub(crate) reinit_calls: u32,
}

/// Shared handle on a script.
#[derive(Debug, Clone, Default)]
pub struct ScriptHandle(Arc<Mutex<Script>>);

impl ScriptHandle {
    pub fn new(devices: Vec<ScriptedDevice>) -> ScriptHandle {
        ScriptHandle(Arc::new(Mutex::new(Script {
            devices,
            ..Script::default()
        })))
    }

    /// Edit the script (a poisoned lock is recovered: this is test scaffolding).
    pub fn lock(&self) -> MutexGuard<'_, Script> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn driver(&self) -> ScriptedGpu {
        ScriptedGpu(self.clone())
    }
}

/// The `GpuDriver` reading a script.
#[derive(Debug, Clone)]
pub struct ScriptedGpu(ScriptHandle);

impl ScriptedGpu {
    fn with_device<T>(
        &self,
        index: u32,
        call: &'static str,
        f: impl FnOnce(&ScriptedDevice) -> Result<T, GpuError>,
    ) -> Result<T, GpuError> {
        let script = self.0.lock();
        let d = script
            .devices
            .iter()
            .find(|d| d.info.index == index)
            .ok_or(GpuError::Device {
                call,
                device: index,
                kind: IssueKind::NotFound,
                detail: "no such device".into(),
            })?;
        if let Some(kind) = d.fail {
            return Err(GpuError::Device {
                call,
                device: index,
                kind,
                detail: format!("scripted failure ({kind})"),
            });
        }
        f(d)
    }
}

impl GpuDriver for ScriptedGpu {
    fn devices(&mut self) -> Result<Vec<DeviceInfo>, GpuError> {
        Ok(self
            .0
            .lock()
            .devices
            .iter()
            .map(|d| d.info.clone())
            .collect())
    }

    fn total_energy_mj(&mut self, index: u32) -> Result<u64, GpuError> {
        let call = "nvmlDeviceGetTotalEnergyConsumption";
        self.with_device(index, call, |d| {
            d.energy_mj.ok_or(GpuError::NotSupported {
                call,
                device: index,
            })
        })
    }

    fn power_mw(&mut self, index: u32) -> Result<u32, GpuError> {
        self.with_device(index, "nvmlDeviceGetPowerUsage", |d| Ok(d.power_mw))
    }

    fn process_utilization(
        &mut self,
        index: u32,
        since_us: u64,
    ) -> Result<Vec<UtilSample>, GpuError> {
        let call = "nvmlDeviceGetProcessUtilization";
        self.with_device(index, call, |d| match &d.util {
            Some(samples) => Ok(samples
                .iter()
                .filter(|s| s.timestamp_us > since_us)
                .copied()
                .collect()),
            None => Err(GpuError::NotSupported {
                call,
                device: index,
            }),
        })
    }

    fn utilization_percent(&mut self, index: u32) -> Result<u32, GpuError> {
        let call = "nvmlDeviceGetUtilizationRates";
        self.with_device(index, call, |d| {
            d.gpu_util.ok_or(GpuError::NotSupported {
                call,
                device: index,
            })
        })
    }

    fn running_processes(&mut self, index: u32) -> Result<Vec<RunningProcess>, GpuError> {
        self.with_device(index, "nvmlDeviceGetComputeRunningProcesses", |d| {
            Ok(d.running.clone())
        })
    }

    fn reinit(&mut self) -> Result<(), GpuError> {
        let mut script = self.0.lock();
        script.reinit_calls += 1;
        if script.driver_down {
            return Err(GpuError::Driver {
                call: "nvmlInit",
                kind: IssueKind::Driver,
                detail: "scripted: driver not loaded".into(),
            });
        }
        Ok(())
    }
}
