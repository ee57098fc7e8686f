//! The real `GpuDriver`: NVML through `nvml-wrapper` (the library is loaded at run time, so the binary
//! runs where there is no NVIDIA driver). Maps each NVML call to the trait, and NVML errors to short
//! kinds. Holds no counter state; `gpu::device` does.

use super::driver::{DeviceInfo, GpuDriver, GpuError, MigInstance, RunningProcess, UtilSample};
use crate::issue::IssueKind;
use crate::units::Pid;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use std::collections::{BTreeSet, HashMap};

/// NVML's value for "MIG mode enabled" (`NVML_DEVICE_MIG_ENABLE`).
const MIG_ENABLED: u32 = 1;

fn kind_of(e: &NvmlError) -> IssueKind {
    match e {
        NvmlError::NotSupported => IssueKind::NotSupported,
        NvmlError::GpuLost | NvmlError::ResetRequired => IssueKind::GpuLost,
        NvmlError::Uninitialized
        | NvmlError::DriverNotLoaded
        | NvmlError::LibraryNotFound
        | NvmlError::LibloadingError(_)
        | NvmlError::FunctionNotFound
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::LibRmVersionMismatch => IssueKind::Driver,
        NvmlError::NoPermission => IssueKind::PermissionDenied,
        NvmlError::NotFound | NvmlError::InvalidArg => IssueKind::NotFound,
        NvmlError::Timeout => IssueKind::Timeout,
        _ => IssueKind::Unknown,
    }
}

fn device_error(call: &'static str, device: u32, e: NvmlError) -> GpuError {
    match e {
        NvmlError::NotSupported => GpuError::NotSupported { call, device },
        e => GpuError::Device {
            call,
            device,
            kind: kind_of(&e),
            detail: e.to_string(),
        },
    }
}

fn driver_error(call: &'static str, e: NvmlError) -> GpuError {
    GpuError::Driver {
        call,
        kind: kind_of(&e),
        detail: e.to_string(),
    }
}

/// NVML, loaded. Devices are looked up by index on each call (a handle lookup, no I/O).
pub(crate) struct NvmlDriver {
    nvml: Nvml,
    /// Per device index: the NVML MIG-handle indices of its MIG devices, in `DeviceInfo::mig` order.
    mig_handles: HashMap<u32, Vec<u32>>,
}

impl NvmlDriver {
    /// Load `libnvidia-ml.so.1` and initialise it. Fails in well under a millisecond without a driver.
    pub(crate) fn open() -> Result<NvmlDriver, GpuError> {
        let nvml = Nvml::init().map_err(|e| GpuError::Unavailable {
            detail: e.to_string(),
        })?;
        Ok(NvmlDriver {
            nvml,
            mig_handles: HashMap::new(),
        })
    }

    fn device(&self, call: &'static str, index: u32) -> Result<Device<'_>, GpuError> {
        self.nvml
            .device_by_index(index)
            .map_err(|e| device_error(call, index, e))
    }
}

impl GpuDriver for NvmlDriver {
    fn devices(&mut self) -> Result<Vec<DeviceInfo>, GpuError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| driver_error("nvmlDeviceGetCount", e))?;
        let mut out = Vec::new();
        let mut mig_handles = HashMap::new();
        for index in 0..count {
            // A GPU that fails here (fallen off the bus) is left out; a re-initialisation finds it again.
            let found = self
                .device("nvmlDeviceGetHandleByIndex", index)
                .and_then(|d| {
                    d.uuid()
                        .map(|uuid| (d, uuid))
                        .map_err(|e| device_error("nvmlDeviceGetUUID", index, e))
                });
            let (device, uuid) = match found {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "GPU {index} left out");
                    continue;
                }
            };
            let name = device.name().unwrap_or_else(|_| "unknown".to_string());
            let mut mig = Vec::new();
            let mut handles = Vec::new();
            let mig_on = device
                .mig_mode()
                .map(|m| m.current == MIG_ENABLED)
                .unwrap_or(false);
            if mig_on {
                let max = device.mig_device_count().unwrap_or(0);
                for mig_index in 0..max {
                    // Unused slots answer NotFound.
                    let Ok(m) = device.mig_device_by_index(mig_index) else {
                        continue;
                    };
                    let Ok(mig_uuid) = m.uuid() else { continue };
                    let memory_bytes = m.memory_info().map(|i| i.total).unwrap_or(0);
                    mig.push(MigInstance {
                        uuid: mig_uuid,
                        memory_bytes,
                    });
                    handles.push(mig_index);
                }
            }
            mig_handles.insert(index, handles);
            out.push(DeviceInfo {
                index,
                uuid,
                name,
                mig,
            });
        }
        self.mig_handles = mig_handles;
        Ok(out)
    }

    fn total_energy_mj(&mut self, index: u32) -> Result<u64, GpuError> {
        let call = "nvmlDeviceGetTotalEnergyConsumption";
        self.device(call, index)?
            .total_energy_consumption()
            .map_err(|e| device_error(call, index, e))
    }

    fn power_mw(&mut self, index: u32) -> Result<u32, GpuError> {
        let call = "nvmlDeviceGetPowerUsage";
        self.device(call, index)?
            .power_usage()
            .map_err(|e| device_error(call, index, e))
    }

    fn process_utilization(
        &mut self,
        index: u32,
        since_us: u64,
    ) -> Result<Vec<UtilSample>, GpuError> {
        let call = "nvmlDeviceGetProcessUtilization";
        match self
            .device(call, index)?
            .process_utilization_stats(since_us)
        {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|s| UtilSample {
                    pid: Pid(s.pid),
                    timestamp_us: s.timestamp,
                    sm_util: s.sm_util,
                })
                .collect()),
            // NVML answers NOT_FOUND when no process was sampled since `since_us`.
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(device_error(call, index, e)),
        }
    }

    fn utilization_percent(&mut self, index: u32) -> Result<u32, GpuError> {
        let call = "nvmlDeviceGetUtilizationRates";
        self.device(call, index)?
            .utilization_rates()
            .map(|u| u.gpu)
            .map_err(|e| device_error(call, index, e))
    }

    fn running_processes(&mut self, index: u32) -> Result<Vec<RunningProcess>, GpuError> {
        let call = "nvmlDeviceGetComputeRunningProcesses";
        let device = self.device(call, index)?;
        // (MIG instance, pid): one entry per process and instance, in order.
        let mut out: BTreeSet<(Option<usize>, u32)> = BTreeSet::new();
        let handles = self.mig_handles.get(&index).cloned().unwrap_or_default();
        if handles.is_empty() {
            let compute = device
                .running_compute_processes()
                .map_err(|e| device_error(call, index, e))?;
            // Graphics contexts are rare on servers and unsupported on some boards: best effort.
            let graphics = device.running_graphics_processes().unwrap_or_default();
            out.extend(compute.into_iter().chain(graphics).map(|p| (None, p.pid)));
        } else {
            // Per-instance lists come from the MIG device handles.
            for (position, mig_index) in handles.iter().enumerate() {
                let mig = device
                    .mig_device_by_index(*mig_index)
                    .map_err(|e| device_error("nvmlDeviceGetMigDeviceHandleByIndex", index, e))?;
                let procs = mig
                    .running_compute_processes()
                    .map_err(|e| device_error(call, index, e))?;
                out.extend(procs.into_iter().map(|p| (Some(position), p.pid)));
            }
        }
        let process = |(mig_instance, pid)| RunningProcess {
            pid: Pid(pid),
            mig_instance,
        };
        Ok(out.into_iter().map(process).collect())
    }

    fn reinit(&mut self) -> Result<(), GpuError> {
        let nvml = Nvml::init().map_err(|e| driver_error("nvmlInit", e))?;
        // The old handle is dropped (nvmlShutdown) after the new one is up.
        self.nvml = nvml;
        Ok(())
    }
}
